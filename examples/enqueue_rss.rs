//! Memory of a large enqueue: a directory of about 1 GiB of text, through the real `qwen3q`
//! binary, without a worker (the command writes the store) and through one (the worker's
//! runner writes it). Prints the peak resident memory of each process.
//!
//! cargo build --release --bins && cargo run --release --example enqueue_rss -- [MIB] [FILE_KIB]
//!
//! MIB (default 1024) of documents: the first four files of 40 MiB (large documents are where
//! batching by count used to go wrong), the rest of FILE_KIB (default 512). Needs about three
//! times MIB free on /tmp (the documents and two stores).

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{model, paused_worker, qwen3q, run_measured};

/// Peak resident memory of a live process (VmHWM), in bytes.
fn peak_of(pid: u64) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let total_mib: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1024);
    let file_kib: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(512);
    let dir = tempfile::Builder::new()
        .prefix("q3rss")
        .tempdir_in("/tmp")
        .unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let line = "The committee reviewed the budget for the coming year, line by line. ";
    let big = 40 * 1024 * 1024;
    let mut written = 0u64;
    let mut n = 0;
    while written < total_mib * 1048576 {
        let size = if n < 4 { big } else { file_kib * 1024 };
        let mut text = format!("Document {n}. ");
        while (text.len() as u64) < size {
            text.push_str(line);
        }
        std::fs::write(docs.join(format!("doc{n:05}.txt")), &text).unwrap();
        written += text.len() as u64;
        n += 1;
    }
    println!("{n} documents, {:.0} MiB", mib(written));
    let model = model("qwen3-tiny.gguf");
    let (docs_s, model_s) = (docs.to_str().unwrap(), model.to_str().unwrap());

    let home = dir.path().join("direct");
    let t = Instant::now();
    let (st, cli_peak, log) =
        run_measured(&mut qwen3q(&home, &["enqueue", docs_s, "--model", model_s]));
    assert!(st.success(), "{log}");
    println!(
        "without a worker: enqueue peak {:.0} MiB, {:.1} s",
        mib(cli_peak),
        t.elapsed().as_secs_f64()
    );
    std::fs::remove_dir_all(&home).unwrap();

    let home = dir.path().join("socket");
    let mut worker = paused_worker(&home);
    let runner = loop {
        let out = qwen3q(&home, &["status", "--json"])
            .stdout(Stdio::piped())
            .output()
            .unwrap();
        let pid = serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v["worker"]["runner_pid"].as_u64());
        if let Some(pid) = pid {
            break pid;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let before = peak_of(runner);
    let t = Instant::now();
    let (st, cli_peak, log) =
        run_measured(&mut qwen3q(&home, &["enqueue", docs_s, "--model", model_s]));
    assert!(st.success(), "{log}");
    let secs = t.elapsed().as_secs_f64();
    let (runner_peak, supervisor_peak) = (peak_of(runner), peak_of(worker.id() as u64));
    println!(
        "through a worker: enqueue peak {:.0} MiB, {secs:.1} s; the worker's runner peak {:.0} MiB \
         ({:.0} MiB before), its supervisor {:.0} MiB",
        mib(cli_peak),
        mib(runner_peak),
        mib(before),
        mib(supervisor_peak)
    );
    Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status()
        .unwrap();
    worker.wait().unwrap();
}
