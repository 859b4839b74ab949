//! Benchmark: interactive chats ahead of batch work (issue 11 §3), on gemma 3 270M.
//!
//! Each run drains the same DOCS documents (up to TG generated tokens each) with a worker at
//! `--parallel B`, twice, in alternating order:
//!
//! - `quiet`: nothing else asks anything;
//! - `chats`: a streamed chat completion on the same model every EVERY seconds while the batch
//!   runs (up to CHAT_TG tokens each; every slot is busy, so the youngest batch sequence gives
//!   its slot and starts again later from its job's checkpoint).
//!
//! After the `chats` drain, the same worker, now idle, answers the same questions again: the
//! time to the first content token (TTFT) while the batch ran against idle is the first figure.
//! The second is the batch's own speed: its completion tokens over its time (first claim to
//! last result; the model's load, a second, is in both), with chats against quiet, both raw and after taking out
//! the chats' share of the generated tokens. The third is what a preemption costs: the tokens
//! the worker decoded that no answer kept (a yielded sequence's tokens since its checkpoint),
//! per preemption. Prints one line per run and a table of medians.
//!
//! With SERVER_CHATS > 0, the anchor last: llama-server (`scripts/build-anchors.sh`, or
//! `QWEN3Q_LLAMA_SERVER`) at `-np B+1` with B clients asking the same summaries without end,
//! and SERVER_CHATS streamed chats timed the same way, busy and then idle.
//!
//! cargo build --release --bins && cargo run --release --example bench_interactive -- [DOCS] [RUNS] [TG] [B] [EVERY] [CHAT_TG] [SERVER_CHATS]
//!
//! Defaults: 720 documents (about 10 minutes a drain on 2 cores), 1 run, 64 tokens, B = 8, a
//! chat every 30 s of up to 64 tokens.

mod support;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{bin, median, model, run_ok};

const N_CTX: u32 = 1024;

/// The `n`th question a person asks: each starts with a word of its own (24 in turn), so that
/// none reuses more than the chat template's first tokens from cells an earlier one left.
fn question(n: usize) -> String {
    const W: [&str; 24] = [
        "Rivers",
        "Harbors",
        "Lanterns",
        "Orchards",
        "Signals",
        "Granite",
        "Meadows",
        "Copper",
        "Winter",
        "Ledgers",
        "Violets",
        "Engines",
        "Markets",
        "Thunder",
        "Gardens",
        "Compasses",
        "Stations",
        "Quarries",
        "Beacons",
        "Timber",
        "Canals",
        "Furnaces",
        "Glaciers",
        "Archives",
    ];
    format!(
        "{} and {}: write two sentences about them.",
        W[n % W.len()],
        W[(n * 7 + 3) % W.len()].to_lowercase()
    )
}

/// A worker on a home of its own (its tempdir removed when dropped), stopped when dropped.
struct Worker {
    child: Child,
    home: PathBuf,
    port: u16,
    key: String,
    _dir: tempfile::TempDir,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Worker {
    /// Enqueue `docs` documents on gemma, then start the worker with the HTTP API.
    fn start(bin: &Path, gemma: &Path, docs: usize, tg: u32, b: u32, port: u16) -> Worker {
        let dir = tempfile::Builder::new()
            .prefix("q3i")
            .tempdir_in("/tmp")
            .unwrap();
        let home = dir.path().join("home");
        let files = dir.path().join("docs");
        std::fs::create_dir_all(&files).unwrap();
        for i in 0..docs {
            std::fs::write(files.join(format!("d{i:05}.txt")), support::doc(i)).unwrap();
        }
        let q = |args: &[&str]| run_ok(bin, &home, args);
        q(&["models", "add", gemma.to_str().unwrap(), "--name", "gemma"]);
        q(&[
            "enqueue",
            files.to_str().unwrap(),
            "--model",
            "gemma",
            "--prompt",
            "Summarise the following report in a few sentences: {text}",
            "--max-tokens",
            &tg.to_string(),
            "--temperature",
            "0",
        ]);
        // QWEN3Q_BENCH_LOG=FILE: the workers' logs (at debug) are appended there.
        let log = match std::env::var_os("QWEN3Q_BENCH_LOG") {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .unwrap(),
            ),
            None => Stdio::null(),
        };
        let child = Command::new(bin)
            .args(["worker", "--http", &format!("127.0.0.1:{port}")])
            .args(["--parallel", &b.to_string(), "--n-ctx", &N_CTX.to_string()])
            .env("QWEN3Q_HOME", &home)
            .env("RUST_LOG", "qwen3q=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let started = Instant::now();
        while std::os::unix::net::UnixStream::connect(home.join("qwen3q.sock")).is_err() {
            assert!(started.elapsed() < Duration::from_secs(60), "no worker");
            std::thread::sleep(Duration::from_millis(20));
        }
        let key = String::from_utf8(run_ok(bin, &home, &["api-key"]).stdout).unwrap();
        Worker {
            child,
            home,
            port,
            key: key.trim().to_string(),
            _dir: dir,
        }
    }

    fn status(&self, bin: &Path) -> serde_json::Value {
        let out = run_ok(bin, &self.home, &["status", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// A streamed chat, the `n`th question: (seconds to the first content token, completion
    /// tokens).
    fn chat(&self, n: usize, tg: u32) -> (f64, u64) {
        let (ttft, tokens) = stream_chat(self.port, &self.key, n, tg);
        (ttft, tokens.expect("a usage chunk"))
    }
}

/// The `n`th question as a streamed chat to the server on `port` (qwen3q's or llama-server):
/// (seconds to the first content token, completion tokens if a usage chunk said).
fn stream_chat(port: u16, key: &str, n: usize, tg: u32) -> (f64, Option<u64>) {
    let body = serde_json::json!({
        "model": "gemma",
        "messages": [{"role": "user", "content": question(n)}],
        "max_tokens": tg,
        "temperature": 0,
        "stream": true,
        "stream_options": {"include_usage": true},
    })
    .to_string();
    let sent = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let (mut raw, mut buf, mut first) = (Vec::new(), [0u8; 4096], None);
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if first.is_none() && has_content(&raw) {
            first = Some(sent.elapsed().as_secs_f64());
        }
    }
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let tokens = text
        .rsplit_once("\"completion_tokens\":")
        .and_then(|(_, t)| t.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|t| t.parse().ok());
    (first.expect("a content token came"), tokens)
}

/// The response so far holds a chunk with a non-empty content delta (the role chunk's
/// content is empty).
fn has_content(raw: &[u8]) -> bool {
    let text = String::from_utf8_lossy(raw);
    text.match_indices("\"content\":\"")
        .any(|(i, m)| text[i + m.len()..].chars().next().is_some_and(|c| c != '"'))
}

/// One drain's figures.
struct Drain {
    /// The batch's completion tokens over its time (first claim to last result).
    batch_tok_s: f64,
    batch_tokens: u64,
    /// Completion tokens of the chats answered while the batch ran.
    chat_tokens: u64,
    /// Tokens decoded that no answer kept, and the batch sequences that gave their slot.
    wasted: u64,
    preempted: u64,
    /// TTFT of each chat while the batch ran, then of the same questions on the idle worker.
    busy_ttft: Vec<f64>,
    idle_ttft: Vec<f64>,
}

fn drain(bin: &Path, gemma: &Path, a: &Args, with_chats: bool, port: u16) -> Drain {
    let w = Worker::start(bin, gemma, a.docs, a.tg, a.b, port);
    let (mut busy_ttft, mut chat_tokens) = (Vec::new(), 0);
    let mut next_chat = Instant::now() + Duration::from_secs(a.every);
    let mut asked = 0;
    loop {
        let st = w.status(bin);
        if st["counts"]["succeeded"].as_u64().unwrap() == a.docs as u64 {
            break;
        }
        let ended = ["failed", "dead", "cancelled"].map(|k| st["counts"][k].as_u64().unwrap_or(0));
        assert_eq!(ended, [0; 3], "a job ended without an answer: {st}");
        if with_chats
            && Instant::now() >= next_chat
            && st["worker"]["in_flight"].as_u64() == Some(a.b as u64)
        {
            let (ttft, tokens) = w.chat(100 + asked, a.chat_tg);
            busy_ttft.push(ttft);
            chat_tokens += tokens;
            asked += 1;
            next_chat += Duration::from_secs(a.every);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let st = w.status(bin);
    let decoded = st["worker"]["generated_tokens"].as_u64().unwrap();
    let preempted = st["worker"]["preempted"].as_u64().unwrap();
    assert_eq!(
        st["worker"]["chats_served"].as_u64().unwrap(),
        asked as u64,
        "{st}"
    );
    // The idle worker, the same questions (its decoded-token count is read before them).
    assert!(
        !with_chats || asked > 0,
        "the drain ended before the first chat: more DOCS"
    );
    let idle_ttft = (0..asked).map(|i| w.chat(500 + i, a.chat_tg).0).collect();
    let (results, span_ms) = support::succeeded_results(bin, &w.home);
    let batch_tokens = support::total(&results, &["usage", "completion_tokens"]);
    let secs = span_ms as f64 / 1000.0;
    Drain {
        batch_tok_s: batch_tokens as f64 / secs,
        batch_tokens,
        chat_tokens,
        wasted: decoded.saturating_sub(batch_tokens + chat_tokens),
        preempted,
        busy_ttft,
        idle_ttft,
    }
}

/// The anchor: llama-server (`-np B+1`: a slot for the chat beside B batch requests) with B
/// client threads asking the same summaries without end, and `chats` streamed chats (one every
/// EVERY s, as above); then the same number on the idle server. TTFT busy, idle.
fn server_ttft(
    tool: &Path,
    gemma: &Path,
    a: &Args,
    chats: usize,
    port: u16,
) -> (Vec<f64>, Vec<f64>) {
    let np = a.b + 1;
    let _server = support::llama_server(tool, gemma, np, N_CTX * np, &[], port);
    stream_chat(port, "-", 0, 4); // warm-up
    let stop = std::sync::atomic::AtomicBool::new(false);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let busy = std::thread::scope(|scope| {
        for _ in 0..a.b {
            scope.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let prompt = format!(
                        "Summarise the following report in a few sentences: {}",
                        support::doc(i)
                    );
                    support::post(
                        port,
                        "/v1/chat/completions",
                        &serde_json::json!({
                            "messages": [{"role": "user", "content": prompt}],
                            "max_tokens": a.tg,
                            "temperature": 0,
                        }),
                    );
                }
            });
        }
        let mut busy = Vec::new();
        for n in 0..chats {
            std::thread::sleep(Duration::from_secs(a.every));
            busy.push(stream_chat(port, "-", 100 + n, a.chat_tg).0);
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        busy
    });
    let idle = (0..chats)
        .map(|n| stream_chat(port, "-", 500 + n, a.chat_tg).0)
        .collect();
    (busy, idle)
}

struct Args {
    docs: usize,
    runs: usize,
    tg: u32,
    b: u32,
    every: u64,
    chat_tg: u32,
    /// Chats to time against llama-server after the worker's runs (0: none).
    server_chats: usize,
}

fn main() {
    let v: Vec<String> = std::env::args().collect();
    let arg = |i: usize, d: u64| v.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let a = Args {
        docs: arg(1, 720) as usize,
        runs: arg(2, 1) as usize,
        tg: arg(3, 64) as u32,
        b: arg(4, 8) as u32,
        every: arg(5, 30),
        chat_tg: arg(6, 64) as u32,
        server_chats: arg(7, 0) as usize,
    };
    let bin = bin();
    let gemma = model("gemma-3-270m-q4_k_m.gguf");
    let port = 19_000 + (std::process::id() % 1000) as u16;
    println!(
        "gemma-3-270m Q4_K_M, {} documents, up to {} tokens each, B = {}, n_ctx {N_CTX} per sequence, fastest kernels; a streamed chat of up to {} tokens every {} s; {} runs",
        a.docs, a.tg, a.b, a.chat_tg, a.every, a.runs
    );
    let (mut ttft_ratio, mut raw, mut adjusted, mut per_preemption) =
        (vec![], vec![], vec![], vec![]);
    let (mut busy, mut idle): (Vec<f64>, Vec<f64>) = (vec![], vec![]);
    for run in 0..a.runs {
        let order = if run % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        let (mut quiet, mut chats) = (None, None);
        for with in order {
            let d = drain(&bin, &gemma, &a, with, port);
            if with {
                chats = Some(d);
            } else {
                quiet = Some(d);
            }
        }
        let (q, c) = (quiet.unwrap(), chats.unwrap());
        let (mb, mi) = (median(c.busy_ttft.clone()), median(c.idle_ttft.clone()));
        // The chats' share of what the worker generated while they ran beside the batch.
        let share = c.chat_tokens as f64 / (c.chat_tokens + c.batch_tokens) as f64;
        let adj = c.batch_tok_s / (q.batch_tok_s * (1.0 - share));
        let per = c.wasted.saturating_sub(q.wasted) as f64 / c.preempted.max(1) as f64;
        eprintln!(
            "run {run}: quiet {:.1} batch tok/s ({} tokens, {} decoded unkept); chats {:.1} batch tok/s ({} tokens, {} chats of {} tokens, share {:.3}, {} preemptions, {} decoded unkept); TTFT busy {:.3} s, idle {:.3} s (medians of {})",
            q.batch_tok_s, q.batch_tokens, q.wasted, c.batch_tok_s, c.batch_tokens, c.busy_ttft.len(), c.chat_tokens, share, c.preempted, c.wasted, mb, mi, c.busy_ttft.len()
        );
        eprintln!("  TTFT busy: {:.3?}", c.busy_ttft);
        eprintln!("  TTFT idle: {:.3?}", c.idle_ttft);
        ttft_ratio.push(mb / mi);
        raw.push(c.batch_tok_s / q.batch_tok_s);
        adjusted.push(adj);
        per_preemption.push(per);
        busy.push(mb);
        idle.push(mi);
    }
    // RUNS = 0: only the anchor below.
    if a.runs > 0 {
        print_table(&busy, &idle, &ttft_ratio, &raw, &adjusted, &per_preemption);
    }
    if a.server_chats > 0 {
        let tool = support::anchor("llama-server", "QWEN3Q_LLAMA_SERVER");
        let (busy, idle) = server_ttft(&tool, &gemma, &a, a.server_chats, port + 1);
        eprintln!("llama-server TTFT busy: {busy:.3?}");
        eprintln!("llama-server TTFT idle: {idle:.3?}");
        let (b, i) = (median(busy), median(idle));
        println!(
            "| llama-server ({}), -np {}: TTFT busy / idle, s | {b:.3} / {i:.3} = {:.2}× | |",
            tool.display(),
            a.b + 1,
            b / i
        );
    }
}

/// The worker's figures, medians over the runs.
fn print_table(
    busy: &[f64],
    idle: &[f64],
    ttft_ratio: &[f64],
    raw: &[f64],
    adjusted: &[f64],
    per_preemption: &[f64],
) {
    let m = |v: &[f64]| median(v.to_vec());
    println!("| figure (median of runs) | value | goal |");
    println!("|---|---|---|");
    println!("| TTFT while the batch runs, s | {:.3} | |", m(busy));
    println!("| TTFT on the idle worker, s | {:.3} | |", m(idle));
    println!("| TTFT busy ÷ idle | {:.2} | ≤ 1.5 |", m(ttft_ratio));
    println!("| batch tok/s with chats ÷ quiet | {:.3} | |", m(raw));
    println!(
        "| the same after taking out the chats' share | {:.3} | ≥ 0.90 |",
        m(adjusted)
    );
    println!(
        "| tokens decoded and not kept, per preemption | {:.1} | |",
        m(per_preemption)
    );
}
