//! Benchmark: enqueue 10,000 small files, through the real `qwen3q` binary.
//!
//! cargo build --release --bins && cargo run --release --example bench_enqueue -- [FILES] [RUNS]
//!
//! Each run makes a fresh home and measures, in one go:
//! - baseline: reading every file in this process (the floor any enqueue pays);
//! - direct: `qwen3q enqueue DIR` with no worker (the CLI opens the store);
//! - socket: the same with a worker running (paused, so it only stores).
//!
//! Prints documents/s for each and the ratio to the baseline; the median over runs.

use std::path::{Path, PathBuf};

mod support;
use std::process::Command;
use std::time::{Duration, Instant};
use support::{bin, median, model, paused_worker, qwen3q};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let files: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let runs: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    assert!(
        bin().exists(),
        "build the binary first: cargo build --release --bins ({})",
        bin().display()
    );
    let model = model("qwen3-tiny.gguf");
    let model = model.to_str().unwrap();
    let (mut base, mut direct, mut socket) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let dir = tempfile::Builder::new()
            .prefix("q3b")
            .tempdir_in("/tmp")
            .unwrap();
        let docs = dir.path().join("docs");
        for i in 0..files {
            let sub = docs.join(format!("{:03}", i % 100));
            std::fs::create_dir_all(&sub).unwrap();
            let text = format!(
                "Document {i} of the benchmark. {}\n",
                "Some words to read. ".repeat(10 + i % 40)
            );
            std::fs::write(sub.join(format!("doc{i:05}.txt")), text).unwrap();
        }
        let docs_s = docs.to_str().unwrap();

        let t = Instant::now();
        let mut bytes = 0;
        for e in walk(&docs) {
            bytes += std::fs::read(e).unwrap().len();
        }
        let baseline = t.elapsed();
        assert!(bytes > 0);

        let home = dir.path().join("direct");
        let t = Instant::now();
        let st = qwen3q(&home, &["enqueue", docs_s, "--model", model])
            .status()
            .unwrap();
        let d = t.elapsed();
        assert!(st.success());

        let home = dir.path().join("socket");
        let mut worker = paused_worker(&home);
        let t = Instant::now();
        let st = qwen3q(&home, &["enqueue", docs_s, "--model", model])
            .status()
            .unwrap();
        let s = t.elapsed();
        assert!(st.success());
        Command::new("kill")
            .args(["-TERM", &worker.id().to_string()])
            .status()
            .unwrap();
        worker.wait().unwrap();

        let rate = |d: Duration| files as f64 / d.as_secs_f64();
        println!(
            "run {run}: baseline {:.0} docs/s, direct {:.0} docs/s ({:.2} s), socket {:.0} docs/s ({:.2} s)",
            rate(baseline),
            rate(d),
            d.as_secs_f64(),
            rate(s),
            s.as_secs_f64()
        );
        base.push(rate(baseline));
        direct.push(rate(d));
        socket.push(rate(s));
    }
    let (b, d, s) = (median(base), median(direct), median(socket));
    println!("median of {runs} runs, {files} files:");
    println!("  baseline (read only)  {b:>9.0} docs/s");
    println!(
        "  enqueue, direct       {d:>9.0} docs/s  ({:.3}x baseline, {:.2} s)",
        d / b,
        files as f64 / d
    );
    println!(
        "  enqueue, via socket   {s:>9.0} docs/s  ({:.3}x baseline, {:.2} s)",
        s / b,
        files as f64 / s
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
