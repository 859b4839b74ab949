//! Shared by the benchmark drivers: where the release binary and the test models are.

#![allow(dead_code)]

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

/// The `qwen3q` binary to measure: `QWEN3Q_BIN`, else the release build in the target dir.
pub fn bin() -> PathBuf {
    if let Some(p) = std::env::var_os("QWEN3Q_BIN") {
        return p.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let bin = target.join("release/qwen3q");
    // qwen3q decodes through qwen3q-engine beside it: both, from one build.
    for b in [bin.clone(), target.join("release/qwen3q-engine")] {
        assert!(
            b.exists(),
            "build the binaries first: cargo build --release --bins ({})",
            b.display()
        );
    }
    bin
}

/// A model from the cache `scripts/fetch-models.sh` fills.
pub fn model(name: &str) -> PathBuf {
    let cache = std::env::var_os("QWEN3Q_MODEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/qwen3q/models")
        });
    cache.join(name)
}

/// `qwen3q ARGS` on the binary measured, with `home`, stdout discarded.
pub fn qwen3q(home: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.args(args).env("QWEN3Q_HOME", home).stdout(Stdio::null());
    c
}

/// `bin ARGS` with `home`, run to its end; it must succeed (else its stderr is the panic).
pub fn run_ok(bin: &Path, home: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new(bin)
        .args(args)
        .env("QWEN3Q_HOME", home)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "qwen3q {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A drain measured: `bin worker --drain --n-ctx N_CTX --parallel B --kernels KERNELS` on
/// `home` (which must succeed), with its log at info; its peak RSS, and the one-time model
/// load and context creation its log gives (ms), which a throughput leaves out.
pub fn measured_drain(bin: &Path, home: &Path, n_ctx: u32, b: u32, kernels: &str) -> (u64, u64) {
    let (status, peak_rss, log) = run_measured(
        Command::new(bin)
            .args(["worker", "--drain", "--n-ctx", &n_ctx.to_string()])
            .args(["--parallel", &b.to_string(), "--kernels", kernels])
            .env("QWEN3Q_HOME", home)
            .env("RUST_LOG", "qwen3q=info"),
    );
    assert!(status.success(), "{log}");
    let load_ms =
        log_number(&log, "model loaded", "millis") + log_number(&log, "context ready", "millis");
    (peak_rss, load_ms)
}

/// A worker on a new `home` that stores but claims nothing (paused), once it answers.
pub fn paused_worker(home: &Path) -> std::process::Child {
    std::fs::create_dir_all(home).unwrap();
    assert!(qwen3q(home, &["pause"]).status().unwrap().success());
    let mut worker = qwen3q(home, &["worker"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while std::os::unix::net::UnixStream::connect(home.join("qwen3q.sock")).is_err() {
        if let Some(status) = worker.try_wait().unwrap() {
            panic!("the worker exited before it answered: {status}");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    worker
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

pub fn doc(i: usize) -> String {
    const S: [&str; 6] = [
        "The committee reviewed the budget for the coming year.",
        "Rainfall in the region was well below the seasonal average.",
        "A new bridge will connect the two halves of the town.",
        "Volunteers planted three hundred trees along the river.",
        "The school added evening classes for adult learners.",
        "Local farmers formed a cooperative to share equipment.",
    ];
    // Numbered, so that no two documents are the same job.
    let body: Vec<&str> = (0..12).map(|k| S[(i + k * 5) % S.len()]).collect();
    format!("Report number {i}. {}", body.join(" "))
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Run a command to its end; its exit status and peak RSS in bytes (wait4's ru_maxrss).
// The child is reaped by wait4 (which std's Child::wait cannot do with rusage).
#[allow(clippy::zombie_processes)]
pub fn run_measured(cmd: &mut Command) -> (std::process::ExitStatus, u64, String) {
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let mut stderr = child.stderr.unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).unwrap();
        s
    });
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid);
    let log = reader.join().unwrap();
    (
        std::process::ExitStatus::from_raw(status),
        usage.ru_maxrss as u64 * 1024,
        log,
    )
}

/// The first `key=N` number on a log line containing `what`.
pub fn log_number(log: &str, what: &str, key: &str) -> u64 {
    log.lines()
        .find(|l| l.contains(what))
        .and_then(|l| l.split(&format!("{key}=")).nth(1))
        .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} on a {what:?} line in the worker log:\n{log}"))
}

/// A tool `scripts/build-anchors.sh` builds (it names each as `NAME=PATH`; built on first use,
/// which takes long on 2 cores), or the path in the environment variable `env` if set.
pub fn anchor(name: &str, env: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join("scripts/build-anchors.sh"))
        .output()
        .expect("scripts/build-anchors.sh runs");
    assert!(out.status.success(), "scripts/build-anchors.sh failed");
    let prefix = format!("{name}=");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("build-anchors.sh names no {name}"))
}

/// llama-server on a port, killed when dropped.
pub struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 POST of `body` (JSON) to `path`; the response's JSON body.
pub fn post(port: u16, path: &str, body: &serde_json::Value) -> serde_json::Value {
    use std::io::{Read, Write};
    let body = body.to_string();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, rest) = out.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{rest}");
    // The server answers with Content-Length (no chunking) for a non-streamed request.
    serde_json::from_str(rest).unwrap_or_else(|e| panic!("{e}: {rest}"))
}

/// `tool` (llama-server) serving `model` on `port` with `np` slots sharing a context of
/// `n_ctx` tokens, all cores, ubatch 512, and `extra` flags; once its /health answers.
pub fn llama_server(
    tool: &Path,
    model: &Path,
    np: u32,
    n_ctx: u32,
    extra: &[&str],
    port: u16,
) -> Server {
    use std::io::{Read, Write};
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .to_string();
    let child = Command::new(tool)
        .args(["-m", model.to_str().unwrap(), "--port", &port.to_string()])
        .args(["-np", &np.to_string(), "-c", &n_ctx.to_string()])
        .args(["-b", "512", "-ub", "512", "-t", &threads, "-tb", &threads])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server(child);
    let started = std::time::Instant::now();
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = write!(
                s,
                "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            );
            let mut r = String::new();
            let _ = s.read_to_string(&mut r);
            if r.starts_with("HTTP/1.1 200") {
                return server;
            }
        }
        assert!(
            started.elapsed().as_secs() < 120,
            "llama-server did not come up"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Every result in `home` (`results --jsonl`, each asserted succeeded), and the span from the
/// first claim to the last result, ms: what each driver sums its figures over.
pub fn succeeded_results(bin: &Path, home: &Path) -> (Vec<serde_json::Value>, u64) {
    let out = run_ok(bin, home, &["results", "--jsonl"]);
    let (mut first, mut last) = (u64::MAX, 0u64);
    let results: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["state"], "succeeded", "{v}");
            first = first.min(v["timings"]["started_ms"].as_u64().unwrap());
            last = last.max(v["timings"]["finished_ms"].as_u64().unwrap());
            v
        })
        .collect();
    (results, last.saturating_sub(first))
}

/// The sum of one number of every result (`path`: keys from the top of a result line).
pub fn total(results: &[serde_json::Value], path: &[&str]) -> u64 {
    results
        .iter()
        .map(|v| {
            path.iter()
                .fold(v, |v, k| &v[*k])
                .as_u64()
                .unwrap_or_else(|| panic!("no {path:?} in {v}"))
        })
        .sum()
}
