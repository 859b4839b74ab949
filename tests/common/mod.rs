//! Helpers shared by the integration tests: a private home directory, running the real
//! binary, the test models, and reading JSON output.

#![allow(dead_code)]

pub mod kills;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The test models, fetched by `scripts/fetch-models.sh` into a cache outside the repo.
pub fn model_cache() -> PathBuf {
    if let Some(dir) = std::env::var_os("QWEN3Q_MODEL_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"));
    base.join("qwen3q/models")
}

fn model(name: &str) -> PathBuf {
    let p = model_cache().join(name);
    assert!(
        p.is_file(),
        "{} is missing: run scripts/fetch-models.sh (the README's test command does)",
        p.display()
    );
    p
}

/// Two layers of width 64 of the real qwen3 architecture: fast, deterministic when greedy.
pub fn tiny() -> PathBuf {
    model("qwen3-tiny.gguf")
}

/// A real small model (Gemma 3 270M, Q4_K_M) for text that must mean something.
pub fn gemma() -> PathBuf {
    model("gemma-3-270m-q4_k_m.gguf")
}

/// A worker process a test started: killed when the test ends, even by a failed assertion
/// (a worker left behind would run on, its home deleted, and slow every later test).
/// A worker started by a test, killed when dropped. Its stderr is read as it comes (into
/// [`SpawnedWorker::log`]): a worker that logs more than a pipe holds would otherwise block on
/// its next line, and a test waiting for its jobs would time out.
pub struct SpawnedWorker(pub Child, StderrLog);

/// A child's stderr, read to its end on a thread of its own.
struct StderrLog {
    text: std::sync::Arc<std::sync::Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl StderrLog {
    fn of(child: &mut Child) -> StderrLog {
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let reader = child.stderr.take().map(|mut pipe| {
            let text = text.clone();
            std::thread::spawn(move || {
                use std::io::Read;
                let mut buf = [0u8; 8192];
                while let Ok(n @ 1..) = pipe.read(&mut buf) {
                    text.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            })
        });
        StderrLog { text, reader }
    }
}

impl SpawnedWorker {
    /// A worker started as `child` (its stderr, if piped, read as it comes).
    pub fn new(mut child: Child) -> SpawnedWorker {
        let log = StderrLog::of(&mut child);
        SpawnedWorker(child, log)
    }

    /// What the worker wrote to stderr: all of it once it has exited (and its runner with it).
    pub fn log(&mut self) -> String {
        if matches!(self.0.try_wait(), Ok(Some(_))) {
            if let Some(reader) = self.1.reader.take() {
                let _ = reader.join();
            }
        }
        self.1.text.lock().unwrap().clone()
    }
}

impl std::ops::Deref for SpawnedWorker {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for SpawnedWorker {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for SpawnedWorker {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A private home directory and the binary pointed at it.
pub struct TestHome {
    pub dir: tempfile::TempDir,
    /// The `qwen3q` to run: the integration tests' own build, or one an example names.
    pub bin: PathBuf,
}

impl TestHome {
    /// A home for the binary cargo built for the integration tests.
    pub fn new() -> TestHome {
        // Set when cargo builds an integration test; an example names its binary instead.
        let Some(bin) = option_env!("CARGO_BIN_EXE_qwen3q") else {
            panic!("TestHome::new is for the integration tests: use TestHome::with_bin")
        };
        TestHome::with_bin(bin.into())
    }

    pub fn with_bin(bin: PathBuf) -> TestHome {
        // Short paths: a Unix socket path must stay under ~100 bytes.
        let dir = tempfile::Builder::new()
            .prefix("q3t")
            .tempdir_in("/tmp")
            .unwrap();
        TestHome { dir, bin }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args)
            .env("QWEN3Q_HOME", self.path())
            .env_remove("QWEN3Q_MODEL")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        c
    }

    /// `sh -c script` with this home (commands joined by pipes).
    pub fn sh(&self, script: &str) -> Output {
        Command::new("sh")
            .args(["-c", script])
            .env("QWEN3Q_HOME", self.path())
            .env_remove("RUST_LOG")
            .output()
            .expect("run sh")
    }

    /// Run to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run qwen3q")
    }

    /// Run and insist on success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "qwen3q {args:?} failed ({:?}):\n{}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Run, expect failure with `code`, and a one-line error; returns that line.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(
            out.status.code(),
            Some(code),
            "qwen3q {args:?}: stderr {stderr}"
        );
        let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("qwen3q:")).collect();
        assert_eq!(
            lines.len(),
            1,
            "one error line expected from {args:?}, got:\n{stderr}"
        );
        lines[0].to_string()
    }

    pub fn spawn_worker(&self, args: &[&str]) -> SpawnedWorker {
        let mut all = vec!["worker"];
        all.extend_from_slice(args);
        SpawnedWorker::new(
            self.command(&all)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn worker"),
        )
    }

    /// Wait until a worker answers on the socket.
    pub fn wait_for_worker(&self, child: &mut Child) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(self.path().join("qwen3q.sock")).is_ok() {
                return;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("worker exited early: {status}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("worker did not start listening");
    }

    /// `results --jsonl` as values.
    pub fn results(&self, extra: &[&str]) -> Vec<Value> {
        let mut args = vec!["results", "--jsonl"];
        args.extend_from_slice(extra);
        self.ok(&args)
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }

    pub fn status(&self) -> Value {
        serde_json::from_str(&self.ok(&["status", "--json"])).unwrap()
    }

    /// `show --json` of one job.
    pub fn show(&self, job: &str) -> Value {
        let v: Value = serde_json::from_str(&self.ok(&["show", job, "--json"])).unwrap();
        v[0].clone()
    }

    /// Enqueue a file or directory on the tiny model, greedy, with a token limit.
    /// `enqueue PATH --model MODEL --max-tokens N`.
    pub fn enqueue_on(&self, path: &Path, model: &Path, max_tokens: &str) -> String {
        self.ok(&[
            "enqueue",
            s(path),
            "--model",
            s(model),
            "--max-tokens",
            max_tokens,
        ])
    }

    pub fn enqueue_tiny(&self, path: &Path, max_tokens: &str) -> String {
        let tiny = tiny();
        self.ok(&[
            "enqueue",
            s(path),
            "--model",
            s(&tiny),
            "--max-tokens",
            max_tokens,
            "--temperature",
            "0",
        ])
    }

    /// Put the store in `tar` (a `store/` directory, tar-gzipped) in place of this home's.
    pub fn unpack_store(&self, tar: &Path) {
        let _ = std::fs::remove_dir_all(self.path().join("store"));
        let ok = Command::new("tar")
            .args(["xzf", s(tar), "-C", s(self.path())])
            .status()
            .unwrap()
            .success();
        assert!(ok, "unpack {}", tar.display());
    }

    /// The files of documents over one part in this home's store (`store/documents/`).
    pub fn document_files(&self) -> Vec<PathBuf> {
        match std::fs::read_dir(self.path().join("store/documents")) {
            Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Write a document under the home's `docs/` directory.
    pub fn doc(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path().join("docs").join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }
}

/// A port on the loopback nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Prose of about `words` words, different for each `seed`.
pub fn prose(seed: usize, words: usize) -> String {
    const W: [&str; 16] = [
        "river", "harbor", "lantern", "orchard", "signal", "granite", "meadow", "copper", "winter",
        "ledger", "violet", "engine", "market", "thunder", "garden", "compass",
    ];
    let mut out = String::new();
    for i in 0..words {
        out.push_str(W[(i * 7 + seed * 13 + i / 5) % W.len()]);
        out.push(if i % 12 == 11 { '.' } else { ' ' });
        if i % 60 == 59 {
            out.push('\n');
        }
    }
    out
}

/// Wait up to `limit` for `child` to exit.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Ask a worker to stop (SIGTERM).
pub fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

/// Poll `done` until it holds; panic naming `what` after `limit`.
pub fn wait_until(limit: Duration, what: &str, done: impl FnMut() -> bool) {
    poll(limit, Duration::from_millis(20), what, done)
}

/// [`wait_until`], looking every `every` (a costly check: a `show` of many jobs).
pub fn poll(limit: Duration, every: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(every);
    }
}

/// Counts of `status --json`'s per-state numbers.
pub fn count(status: &Value, state: &str) -> u64 {
    status["counts"][state].as_u64().unwrap()
}

/// The library's small deterministic generator (xorshift), seeded per test.
pub use qwen3q::fuzz::Rng;

/// A seed from the clock, printed so that a failing run can be repeated.
pub fn seed(what: &str) -> u64 {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("{what}: seed {seed}");
    seed
}

/// Send `sig` (a name: `KILL`, `SEGV`, …) to `pid`.
pub fn kill(sig: &str, pid: u64) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// The pid of the worker's runner (the process that runs inference), once it answers.
pub fn runner(h: &TestHome) -> u64 {
    let mut pid = 0;
    wait_until(Duration::from_secs(60), "the runner answers", || {
        let out = h.run(&["status", "--json"]);
        pid = serde_json::from_slice::<Value>(&out.stdout)
            .ok()
            .and_then(|s| s["worker"]["runner_pid"].as_u64())
            .unwrap_or(0);
        pid > 0
    });
    pid
}

/// `kill -9` of a whole worker, runner and supervisor, as a reboot or a power loss ends it;
/// returns once the runner is gone (until then its socket still answers).
pub fn kill_9_worker(h: &TestHome, worker: &mut SpawnedWorker) {
    let pid = runner(h);
    kill("KILL", pid);
    worker.0.kill().unwrap();
    worker.0.wait().unwrap();
    wait_until(Duration::from_secs(10), "the runner's death", || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
}

/// Every result of `h`, each asserted succeeded, as (custom id, answer, `more(result)`), sorted
/// by custom id.
pub fn answers_by_id<T: Ord>(h: &TestHome, more: impl Fn(&Value) -> T) -> Vec<(String, String, T)> {
    let mut out: Vec<_> = h
        .results(&[])
        .iter()
        .map(|r| {
            assert_eq!(r["state"], "succeeded", "{r}");
            (
                r["custom_id"].as_str().unwrap().to_string(),
                r["answer"].as_str().unwrap().to_string(),
                more(r),
            )
        })
        .collect();
    out.sort();
    out
}

/// The reasons of a job's events, from its `show --json`.
pub fn reasons(shown: &Value) -> Vec<&str> {
    shown["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect()
}
