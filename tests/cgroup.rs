//! Memory governance under a real cgroup memory limit: v1 or v2, whichever this machine
//! mounts (root makes a child group). Each limit is derived from what `models inspect`
//! predicts for the model and shape, so the tests keep their point when the predictions
//! change. Where the machine allows a group, not getting one fails the test.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

const MIB: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// A child memory cgroup with a limit, removed on drop.
struct Cgroup {
    dir: PathBuf,
    version: Version,
}

impl Cgroup {
    /// A group limited to `limit` bytes, or why this machine allows none (not root, or no
    /// writable memory controller). Where it does, failing to make one fails the test.
    fn create(name: &str, limit: u64) -> Result<Cgroup, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("making a cgroup needs root".into());
        }
        let v1 = Path::new("/sys/fs/cgroup/memory");
        let v2 = Path::new("/sys/fs/cgroup");
        let (parent, version) = if v1.join("cgroup.procs").exists() {
            (v1, Version::V1)
        } else if std::fs::read_to_string(v2.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"))
        {
            (v2, Version::V2)
        } else {
            return Err(
                "no cgroup memory controller: neither /sys/fs/cgroup/memory (v1) nor \
                        memory in /sys/fs/cgroup/cgroup.controllers (v2)"
                    .into(),
            );
        };
        let dir = parent.join(format!("qwen3q-{name}-{}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EROFS) => {
                return Err(format!("{} is read-only here", parent.display()))
            }
            Err(e) => panic!("{}: {e}", dir.display()),
        }
        if version == Version::V2 {
            // The memory controller must be on for the root's children.
            let control = v2.join("cgroup.subtree_control");
            let on = std::fs::read_to_string(&control).unwrap_or_default();
            if !on.split_whitespace().any(|c| c == "memory") {
                std::fs::write(&control, "+memory")
                    .unwrap_or_else(|e| panic!("{}: {e}", control.display()));
            }
        }
        let cg = Cgroup { dir, version };
        cg.set_limit(limit);
        eprintln!(
            "cgroup {:?} memory group {} limited to {} MiB",
            cg.version,
            cg.dir.display(),
            limit / MIB
        );
        Ok(cg)
    }

    /// A shell command line that joins the group, then runs `qwen3q args`.
    fn command_in(&self, h: &TestHome, args: &[&str]) -> std::process::Command {
        let bin = env!("CARGO_BIN_EXE_qwen3q");
        let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
        self.shell_in(&format!("exec {bin} {}", quoted.join(" ")), h)
    }

    /// `sh -c script`, joined to the group first.
    fn shell_in(&self, script: &str, h: &TestHome) -> std::process::Command {
        let script = format!("echo $$ > {}/cgroup.procs && {script}", self.dir.display());
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", &script])
            .env("QWEN3Q_HOME", h.path())
            .env_remove("RUST_LOG");
        cmd
    }

    fn run_in(&self, h: &TestHome, args: &[&str]) -> std::process::Output {
        self.command_in(h, args).output().unwrap()
    }

    /// `qwen3q args` started in the group, its output dropped.
    fn spawn_in(&self, h: &TestHome, args: &[&str]) -> SpawnedWorker {
        SpawnedWorker::new(
            self.command_in(h, args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    fn set_limit(&self, limit: u64) {
        let file = match self.version {
            Version::V1 => "memory.limit_in_bytes",
            Version::V2 => "memory.max",
        };
        std::fs::write(self.dir.join(file), limit.to_string()).unwrap();
    }

    /// A field of the group's `memory.stat` (v1: the hierarchical `total_` one).
    fn stat(&self, field: &str) -> u64 {
        let name = match self.version {
            Version::V1 => format!("total_{field}"),
            Version::V2 => field.to_string(),
        };
        let text = std::fs::read_to_string(self.dir.join("memory.stat")).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .map_or(0, |n| n.trim().parse().unwrap())
    }

    /// OOM kills in the group so far.
    fn oom_kills(&self) -> u64 {
        let file = match self.version {
            Version::V1 => "memory.oom_control",
            Version::V2 => "memory.events",
        };
        let text = std::fs::read_to_string(self.dir.join(file)).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .map_or(0, |n| n.trim().parse::<u64>().unwrap())
    }

    /// Fill the group's page cache: `bytes` of a file read by a process in the group, its
    /// pages dropped first so that the read charges them here. Returns the group's inactive
    /// file cache after it.
    fn fill_cache(&self, h: &TestHome, bytes: u64) -> u64 {
        let file = h.path().join("filler.bin");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&file).unwrap();
            let block = vec![0x5au8; MIB as usize];
            for _ in 0..bytes / MIB {
                f.write_all(&block).unwrap();
            }
            f.sync_all().unwrap();
        }
        drop_caches();
        let st = self
            .shell_in(&format!("cat '{}' > /dev/null", s(&file)), h)
            .status()
            .unwrap();
        assert!(st.success());
        // The file stays (its removal would drop the cache) until the home goes.
        self.stat("inactive_file")
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Processes have exited; an empty group can be removed.
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Empty the page cache, so that the next read of a file (the model's too) charges its pages to
/// the reader's group. Needs root, as the groups do.
fn drop_caches() {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3").expect("drop the page cache (root)");
}

/// `models inspect MODEL --n-ctx N --parallel LIST --json`: predicted bytes per B, and the
/// weights.
fn predicted(h: &TestHome, model: &Path, n_ctx: u32, parallel: &[u32]) -> (Vec<u64>, u64) {
    let list: Vec<String> = parallel.iter().map(|b| b.to_string()).collect();
    let v: Value = serde_json::from_str(&h.ok(&[
        "models",
        "inspect",
        s(model),
        "--n-ctx",
        &n_ctx.to_string(),
        "--parallel",
        &list.join(","),
        "--json",
    ]))
    .unwrap();
    let memory = v["memory"].as_array().unwrap();
    let total = |b: u32| {
        memory
            .iter()
            .find(|m| m["n_seq"] == b && m["n_ctx"] == n_ctx)
            .unwrap_or_else(|| panic!("no prediction for B={b}: {v}"))["predicted"]["total"]
            .as_u64()
            .unwrap()
    };
    let weights = memory[0]["predicted"]["weights"].as_u64().unwrap();
    (parallel.iter().map(|&b| total(b)).collect(), weights)
}

/// What the worker itself holds before any model loads (binary, store, llama.cpp's backend),
/// allowed for when a limit is set between two needs.
const WORKER_ALLOWANCE: u64 = 64 * MIB;

/// A limit whose memory beyond the 12.5 % reserve and the worker's own is `free`.
fn limit_leaving(free: u64) -> u64 {
    (free + WORKER_ALLOWANCE) * 8 / 7
}

fn not_here(why: String) {
    eprintln!("NOTE: no cgroup memory group on this machine ({why}); not checked");
}

#[test]
fn the_probe_sees_a_cgroup_limit_and_the_gate_holds_a_model_that_cannot_fit_it() {
    let h = TestHome::new();
    let gemma = gemma();
    let (need, weights) = predicted(&h, &gemma, 512, &[1]);
    // A limit between gemma's weights and what it needs with a context at n_ctx 512 (the least
    // a job asks): the gate holds it instead of letting llama.cpp allocate into an OOM kill.
    // Models may take all of it beyond a 1 MiB reserve, so that the weights alone pass the
    // budget's share and what stops the load is memory.
    std::fs::write(
        h.path().join("config.toml"),
        "memory_model_share = 1.0\nmemory_reserve_mb = 1\n",
    )
    .unwrap();
    let limit = (weights + (need[0] - weights) / 2) / MIB * MIB;
    assert!(
        limit > weights + MIB && limit < need[0],
        "{limit} {weights} {need:?}"
    );
    let cg = match Cgroup::create("gate", limit) {
        Ok(cg) => cg,
        Err(why) => return not_here(why),
    };
    let out = cg.run_in(&h, &["memory", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["current"]["cgroup"]["limit"], limit, "{v}");
    let version = format!("{:?}", cg.version).to_lowercase();
    assert_eq!(v["current"]["cgroup"]["version"], version, "{v}");
    assert!(v["current"]["cgroup"]["usage"].as_u64().unwrap() > 0);

    let doc = h.doc("g.txt", &prose(8, 40));
    h.enqueue_on(&doc, &gemma, "4");
    let out = cg.run_in(
        &h,
        &["worker", "--drain", "--n-ctx", "512", "--parallel", "1"],
    );
    // The drain does not pretend it finished: exit 6, one line saying what does not fit.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("drained:"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        line.contains("job 1 does not fit in memory even with every model unloaded"),
        "{line}"
    );
    let shown = h.show("1");
    assert_eq!(shown["state"], "queued", "{shown}");
    let waited = shown["events"].as_array().unwrap().iter().any(|e| {
        e["reason"]
            .as_str()
            .unwrap()
            .contains("waiting for memory: needs")
    });
    assert!(waited, "{shown}");
    assert_eq!(shown["attempts"], 0);

    // A running worker in the same group: a new job waits for memory; when the limit is
    // raised (memory frees) it runs within seconds, not after its minute of waiting.
    let mut worker = cg.spawn_in(&h, &["worker", "--n-ctx", "512", "--parallel", "1"]);
    h.wait_for_worker(&mut worker);
    let doc = h.doc("h.txt", &prose(9, 40));
    h.enqueue_on(&doc, &gemma, "4");
    wait_until(
        Duration::from_secs(30),
        "the new job waits for memory",
        || {
            h.show("2")["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["reason"].as_str().unwrap().contains("waiting for memory"))
        },
    );
    cg.set_limit(need[0] * 4);
    // Well within the minute its deferral set: the event below says what woke it.
    wait_until(
        Duration::from_secs(50),
        "the job runs once memory frees",
        || h.show("2")["state"] == "succeeded",
    );
    let shown = h.show("2");
    assert!(
        shown["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"].as_str().unwrap().starts_with("memory freed")),
        "{shown}"
    );
    sigterm(&worker);
    wait_exit(&mut worker, Duration::from_secs(10)).expect("worker exits");
}

/// `memory --window 1h --json`'s series.
fn series(h: &TestHome) -> Vec<Value> {
    let mem: Value = serde_json::from_str(&h.ok(&["memory", "--window", "1h", "--json"])).unwrap();
    mem["series"].as_array().unwrap().clone()
}

#[test]
fn under_a_limit_between_what_b1_and_b8_need_the_run_adapts_and_finishes_without_oom() {
    let h = TestHome::new();
    let gemma = gemma();
    let (need, _) = predicted(&h, &gemma, 1024, &[1, 8]);
    // Memory beyond the reserve and the worker's own halfway between what B=1 and B=8 need:
    // B=1 fits, B=8 does not.
    let limit = limit_leaving((need[0] + need[1]) / 2) / MIB * MIB;
    let cg = match Cgroup::create("adapt", limit) {
        Ok(cg) => cg,
        Err(why) => return not_here(why),
    };
    std::fs::write(h.path().join("config.toml"), "history_sample_secs = 0.2\n").unwrap();
    for i in 0..4 {
        let doc = h.doc(&format!("d{i}.txt"), &prose(20 + i, 60));
        h.enqueue_on(&doc, &gemma, "16");
    }
    // The model's pages not in the cache: the worker's reads of it charge this group.
    drop_caches();
    let out = cg.run_in(
        &h,
        &["worker", "--drain", "--n-ctx", "1024", "--parallel", "8"],
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert_eq!(count(&h.status(), "succeeded"), 4, "{log}");
    assert_eq!(cg.oom_kills(), 0);
    // The gate brought B down from 8 for the first load, and the history recorded it.
    let b: Vec<u64> = h
        .results(&[])
        .iter()
        .map(|r| r["parameters"]["n_seq"].as_u64().unwrap())
        .collect();
    assert!(b.iter().any(|&b| b < 8), "some job ran below B=8: {b:?}");
    let sampled: Vec<u64> = series(&h)
        .iter()
        .map(|s| s["batch"].as_u64().unwrap())
        .collect();
    assert!(
        sampled.iter().any(|&b| (1..8).contains(&b)),
        "the history shows B below 8: {sampled:?}"
    );

    // The same limit with the adaptive batch size (readings every half second), after a
    // process in the group filled its page cache: cache the kernel reclaims on demand is not
    // memory in use. With no calibration the controller starts at what memory allows (below
    // 4: B=4 needs more than is free), growth is refused by the gate rather than tried; still
    // no OOM kill.
    let (need4, weights) = predicted(&h, &gemma, 1024, &[4]);
    let beyond_reserve = limit / 8 * 7;
    assert!(
        need4[0] > beyond_reserve || need4[0] - weights > beyond_reserve / 4,
        "B=4 needs more than is free, or a context over the buffers' share"
    );
    std::fs::write(
        h.path().join("config.toml"),
        "history_sample_secs = 0.2\nadapt_interval_secs = 0.5\n",
    )
    .unwrap();
    for i in 0..6 {
        let doc = h.doc(&format!("a{i}.txt"), &prose(40 + i, 80));
        h.enqueue_on(&doc, &gemma, "48");
    }
    let cached = cg.fill_cache(&h, 2 * limit);
    assert!(
        cached > limit / 2,
        "the group's cache is full: {} MiB inactive in {} MiB",
        cached / MIB,
        limit / MIB
    );
    let out = cg.run_in(
        &h,
        &[
            "worker",
            "--drain",
            "--adaptive",
            "--n-ctx",
            "1024",
            "--parallel",
            "8",
        ],
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert_eq!(count(&h.status(), "succeeded"), 10, "{log}");
    assert_eq!(cg.oom_kills(), 0);
    assert!(log.contains("starting at what memory allows"), "{log}");
    let adaptive_b: Vec<u64> = h
        .results(&[])
        .iter()
        .filter(|r| r["custom_id"].as_str().unwrap().starts_with('a'))
        .map(|r| r["parameters"]["n_seq"].as_u64().unwrap())
        .collect();
    assert!(
        adaptive_b.iter().all(|&b| (1..4).contains(&b)),
        "below the start of 4, which does not fit: {adaptive_b:?}"
    );
}

#[test]
fn a_loaded_model_counts_as_used_and_unloading_it_frees_what_the_gate_expects() {
    let h = TestHome::new();
    let gemma = gemma();
    let (need, weights) = predicted(&h, &gemma, 512, &[1]);
    // Room for the model twice over: nothing here waits for memory.
    let cg = match Cgroup::create("unload", limit_leaving(2 * need[0]) / MIB * MIB) {
        Ok(cg) => cg,
        Err(why) => return not_here(why),
    };
    // Models unload as soon as a batch ends; memory sampled five times a second.
    std::fs::write(
        h.path().join("config.toml"),
        "history_sample_secs = 0.2\nkeep_alive_secs = 0\n",
    )
    .unwrap();
    drop_caches();
    let mut worker = cg.spawn_in(&h, &["worker", "--n-ctx", "512", "--parallel", "1"]);
    h.wait_for_worker(&mut worker);
    std::thread::sleep(Duration::from_secs(1));
    // Two loads and unloads of the same model in one process: the second read of its file
    // is the one that would leave active cache behind.
    for round in 1..=2u64 {
        let doc = h.doc(&format!("u{round}.txt"), &prose(60 + round as usize, 40));
        h.enqueue_on(&doc, &gemma, "8");
        wait_until(Duration::from_secs(60), "the job succeeds", || {
            h.show(&round.to_string())["state"] == "succeeded"
        });
        wait_until(Duration::from_secs(30), "the model unloads", || {
            h.status()["worker"]["models"]
                .as_array()
                .is_some_and(|m| m.is_empty())
        });
    }
    std::thread::sleep(Duration::from_secs(1));
    sigterm(&worker);
    wait_exit(&mut worker, Duration::from_secs(10)).expect("worker exits");

    let samples = series(&h);
    let available = |s: &Value| s["available"].as_u64().unwrap();
    let loaded = |s: &Value| !s["models"].as_array().unwrap().is_empty();
    let first = samples.first().expect("samples");
    let last = samples.last().unwrap();
    assert!(!loaded(first) && !loaded(last), "{samples:?}");
    let baseline = available(first);
    let lowest_loaded = samples
        .iter()
        .filter(|s| loaded(s))
        .map(available)
        .min()
        .expect("samples while the model was loaded");
    let mib = |b: u64| b / MIB;
    // While loaded, the weights are memory in use (not cache the reading calls free).
    assert!(
        lowest_loaded + weights * 9 / 10 <= baseline,
        "available {} MiB before, {} MiB at least while loaded: weights are {} MiB",
        mib(baseline),
        mib(lowest_loaded),
        mib(weights)
    );
    // After the second unload, what was available before is again (within a quarter of the
    // weights: allocator slack, the store's growth).
    assert!(
        available(last) + weights / 4 >= baseline,
        "available {} MiB before the first load, {} MiB after the second unload (weights {} MiB)",
        mib(baseline),
        mib(available(last)),
        mib(weights)
    );
}
