//! Benchmark: the adaptive batch size (`worker --adaptive`) against fixed B, on gemma.
//!
//! cargo build --release --bins && cargo run --release --example bench_adaptive -- [DOCS] [RUNS] [TG] [MAX_B]
//!
//! Once: a home with gemma registered and `qwen3q calibrate` run on it (the curve and its knee
//! are printed). Each run: fixed B = 1, 2, 4, …, MAX_B (order reversed every other run), then
//! the adaptive worker (up to MAX_B) from the calibrated knee and with no calibration (from
//! the memory estimate), each bracketed by a run of that run's best fixed B right before and
//! right after it. Every configuration: a fresh copy of the home (without the calibration for
//! the last), DOCS documents enqueued, `qwen3q worker --drain`. Reports generated tokens/s
//! (first claim to last result, less the one-time model load), median over runs; fixed B
//! against the run's best fixed B, adaptive against the mean of its two brackets (this
//! machine's speed drifts 10–20 % within minutes); the mean B the jobs finished at; the
//! worker's peak RSS; and the memory budget (RAM less the reserve) it must stay under.

mod support;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::{bin, doc, log_number, median, model, run_measured, run_ok as q};

const N_CTX: u32 = 1024;

#[derive(Clone, Debug, PartialEq)]
enum Config {
    Fixed(u32),
    Adaptive { calibrated: bool },
}

impl Config {
    fn label(&self) -> String {
        match self {
            Config::Fixed(b) => format!("fixed B={b}"),
            Config::Adaptive { calibrated: true } => "adaptive, from the calibrated knee".into(),
            Config::Adaptive { calibrated: false } => "adaptive, no calibration".into(),
        }
    }
}

struct Outcome {
    gen_tps: f64,
    mean_b: f64,
    peak_rss: u64,
}

fn copy_dir(from: &Path, to: &Path) {
    let ok = Command::new("cp")
        .args(["-a", from.to_str().unwrap(), to.to_str().unwrap()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn run_config(
    bin: &Path,
    template: &Path,
    config: &Config,
    docs: &Path,
    tg: u32,
    max_b: u32,
) -> Outcome {
    let dir = tempfile::Builder::new()
        .prefix("q3a")
        .tempdir_in("/tmp")
        .unwrap();
    let home = dir.path().join("home");
    copy_dir(template, &home);
    let tg_s = tg.to_string();
    q(
        bin,
        &home,
        &[
            "enqueue",
            docs.to_str().unwrap(),
            "--model",
            "gemma",
            "--max-tokens",
            &tg_s,
            "--temperature",
            "0",
        ],
    );
    let n_ctx = N_CTX.to_string();
    let (parallel, adaptive) = match config {
        Config::Fixed(b) => (b.to_string(), false),
        Config::Adaptive { .. } => (max_b.to_string(), true),
    };
    let mut args = vec![
        "worker",
        "--drain",
        "--n-ctx",
        &n_ctx,
        "--parallel",
        &parallel,
    ];
    if adaptive {
        args.push("--adaptive");
    }
    let (status, peak_rss, log) = run_measured(
        Command::new(bin)
            .args(&args)
            .env("QWEN3Q_HOME", &home)
            .env("RUST_LOG", "qwen3q=info"),
    );
    assert!(status.success(), "{log}");
    let load_ms =
        log_number(&log, "model loaded", "millis") + log_number(&log, "context ready", "millis");
    let (results, span_ms) = support::succeeded_results(bin, &home);
    let gen = support::total(&results, &["usage", "completion_tokens"]);
    let bsum = support::total(&results, &["parameters", "n_seq"]);
    let secs = span_ms.saturating_sub(load_ms) as f64 / 1000.0;
    Outcome {
        gen_tps: gen as f64 / secs,
        mean_b: bsum as f64 / results.len() as f64,
        peak_rss,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(48);
    let runs: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let tg: u32 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(96);
    let max_b: u32 = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(8);
    let bin = bin();
    let gemma = model("gemma-3-270m-q4_k_m.gguf");
    let dir = tempfile::Builder::new()
        .prefix("q3t")
        .tempdir_in("/tmp")
        .unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    for i in 0..n {
        std::fs::write(docs.join(format!("doc{i:03}.txt")), doc(i)).unwrap();
    }
    // Two template homes: gemma registered in both, calibrated in one.
    let plain: PathBuf = dir.path().join("plain");
    q(
        &bin,
        &plain,
        &["models", "add", gemma.to_str().unwrap(), "--name", "gemma"],
    );
    let calibrated = dir.path().join("calibrated");
    copy_dir(&plain, &calibrated);
    let out = q(
        &bin,
        &calibrated,
        &[
            "calibrate",
            "gemma",
            "--n-ctx",
            &N_CTX.to_string(),
            "--max-parallel",
            &max_b.to_string(),
            "--json",
        ],
    );
    let cal: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let curve: Vec<String> = cal["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "B={} {:.0}",
                p["n_seq"],
                p["tokens_per_sec"].as_f64().unwrap()
            )
        })
        .collect();
    println!(
        "calibration (generated tok/s): {}; knee B={}",
        curve.join(", "),
        cal["knee"]
    );
    let budget = {
        use qwen3q::monitor::MemoryProbe;
        let total = qwen3q::monitor::system::SystemProbe::new(None)
            .sample(0)
            .effective_total();
        let b = qwen3q::scheduler::admission::Budget::from_total(total, cfg!(target_os = "macos"));
        total - b.reserve
    };
    let fixed: Vec<Config> = std::iter::successors(Some(1u32), |b| Some(b * 2))
        .take_while(|&b| b <= max_b)
        .map(Config::Fixed)
        .collect();
    let adaptive = [
        Config::Adaptive { calibrated: true },
        Config::Adaptive { calibrated: false },
    ];
    let configs: Vec<Config> = fixed.iter().chain(&adaptive).cloned().collect();
    let template_of = |c: &Config| match c {
        Config::Adaptive { calibrated: false } => &plain,
        _ => &calibrated,
    };
    // Per configuration: generated tok/s, its ratio to the best fixed B, mean B, RSS.
    let mut tps: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    let mut ratio: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    let mut mean_b: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    let mut rss: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    let mut record = |i: usize, o: &Outcome, best: f64| {
        tps[i].push(o.gen_tps);
        ratio[i].push(o.gen_tps / best);
        mean_b[i].push(o.mean_b);
        rss[i].push(o.peak_rss as f64);
    };
    for run in 0..runs {
        // The fixed sizes, in an order that alternates from run to run; the best of them...
        let mut order: Vec<usize> = (0..fixed.len()).collect();
        if run % 2 == 1 {
            order.reverse();
        }
        let mut got: Vec<Option<Outcome>> = (0..fixed.len()).map(|_| None).collect();
        for &i in &order {
            let o = run_config(&bin, template_of(&fixed[i]), &fixed[i], &docs, tg, max_b);
            eprintln!(
                "run {run}: {}: {:.1} generated tok/s",
                fixed[i].label(),
                o.gen_tps
            );
            got[i] = Some(o);
        }
        let got: Vec<Outcome> = got.into_iter().map(Option::unwrap).collect();
        let (best_i, _) = got
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.gen_tps.partial_cmp(&b.1.gen_tps).unwrap())
            .unwrap();
        let best_fixed = got[best_i].gen_tps;
        for (i, o) in got.iter().enumerate() {
            record(i, o, best_fixed);
        }
        // ...then brackets each adaptive run: best, adaptive, best, adaptive, best. Each
        // adaptive run is compared with the mean of the best fixed B right before and right
        // after it (the machine's speed drifts by 10–20 % within minutes).
        let mut before = run_config(&bin, &calibrated, &fixed[best_i], &docs, tg, max_b).gen_tps;
        for (k, c) in adaptive.iter().enumerate() {
            let o = run_config(&bin, template_of(c), c, &docs, tg, max_b);
            let after = run_config(&bin, &calibrated, &fixed[best_i], &docs, tg, max_b).gen_tps;
            let bracket = (before + after) / 2.0;
            eprintln!(
                "run {run}: {}: {:.1} generated tok/s, mean B {:.1}; {} before {before:.1}, after {after:.1}: ratio {:.3}",
                c.label(),
                o.gen_tps,
                o.mean_b,
                fixed[best_i].label(),
                o.gen_tps / bracket
            );
            record(fixed.len() + k, &o, bracket);
            before = after;
        }
    }
    println!(
        "gemma-3-270m Q4_K_M, {n} docs, up to {tg} generated tokens each, n_ctx {N_CTX} per sequence, B up to {max_b}, {runs} runs; memory budget (RAM less the reserve) {} MiB",
        budget >> 20
    );
    println!("| configuration | generated tok/s | ÷ best fixed B (fixed: same run; adaptive: bracketing runs) | mean B at finish | peak RSS |");
    println!("|---|---|---|---|---|");
    for (i, c) in configs.iter().enumerate() {
        println!(
            "| {} | {:.0} | {:.3} | {:.1} | {:.0} MiB |",
            c.label(),
            median(tps[i].clone()),
            median(ratio[i].clone()),
            median(mean_b[i].clone()),
            median(rss[i].clone()) / 1048576.0
        );
    }
}
