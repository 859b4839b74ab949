//! Memory governance under a real cgroup v1 memory limit (these machines allow root to create
//! a child group under /sys/fs/cgroup/memory).

use std::path::{Path, PathBuf};

use std::time::Duration;

use crate::common::*;
use crate::socket::{sigterm, wait_exit};

/// A child memory cgroup with a limit, removed on drop.
struct Cgroup(PathBuf);

impl Cgroup {
    /// `None` where the machine does not allow one (not root, or no cgroup v1 memory
    /// controller): the caller says so. Where it does, failing to make one fails the test.
    fn create(name: &str, limit: u64) -> Option<Cgroup> {
        let root = Path::new("/sys/fs/cgroup/memory");
        // SAFETY: geteuid has no preconditions.
        let root_user = unsafe { libc::geteuid() } == 0;
        if !root.join("cgroup.procs").exists() || !root_user {
            return None;
        }
        let dir = root.join(format!("qwen3q-{name}-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let cg = Cgroup(dir);
        cg.set_limit(limit);
        Some(cg)
    }

    /// A shell command line that joins the group, then runs `args`.
    fn command_in(&self, h: &TestHome, args: &[&str]) -> std::process::Command {
        let bin = env!("CARGO_BIN_EXE_qwen3q");
        let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
        let script = format!(
            "echo $$ > {}/cgroup.procs && exec {bin} {}",
            self.0.display(),
            quoted.join(" ")
        );
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", &script])
            .env("QWEN3Q_HOME", h.path())
            .env_remove("RUST_LOG");
        cmd
    }

    fn run_in(&self, h: &TestHome, args: &[&str]) -> std::process::Output {
        self.command_in(h, args).output().unwrap()
    }

    fn set_limit(&self, limit: u64) {
        std::fs::write(self.0.join("memory.limit_in_bytes"), limit.to_string()).unwrap();
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Processes have exited; an empty group can be removed.
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn the_probe_sees_a_cgroup_limit_and_the_gate_holds_a_model_that_cannot_fit_it() {
    let Some(cg) = Cgroup::create("gate", 600 << 20) else {
        eprintln!("NOTE: cannot create a cgroup v1 memory group here (needs root); not checked");
        return;
    };
    let h = TestHome::new();
    let out = cg.run_in(&h, &["memory", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["current"]["cgroup"]["limit"], 600u64 << 20, "{v}");
    assert!(v["current"]["cgroup"]["usage"].as_u64().unwrap() > 0);

    // gemma needs ~760 MiB at n_ctx 512 (mostly its compute buffer): in a 600 MiB group the
    // gate holds it instead of letting llama.cpp allocate into an OOM kill.
    let gemma = gemma();
    let doc = h.doc("g.txt", &prose(8, 40));
    h.enqueue_on(&doc, &gemma, "4");
    let out = cg.run_in(
        &h,
        &["worker", "--drain", "--n-ctx", "512", "--parallel", "1"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
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
    let mut worker = SpawnedWorker(
        cg.command_in(&h, &["worker", "--n-ctx", "512", "--parallel", "1"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
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
    cg.set_limit(4 << 30);
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

/// OOM kills in the group so far (memory.oom_control; absent on old kernels: none seen).
fn oom_kills(cg: &Cgroup) -> u64 {
    let oom = std::fs::read_to_string(cg.0.join("memory.oom_control")).unwrap_or_default();
    oom.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .map_or(0, |n| n.trim().parse::<u64>().unwrap())
}

#[test]
fn under_a_limit_between_what_b1_and_b8_need_the_run_adapts_and_finishes_without_oom() {
    // gemma at n_ctx 1024: B=1 needs ~776 MiB, B=2 ~795, B=4 ~833, B=8 ~909 (predicted; see
    // models inspect). In 960 MiB, less the 12.5 % reserve (120 MiB) and the worker's own
    // ~30 MiB, about 810 MiB are free: B=8 does not fit, B=1 does.
    let Some(cg) = Cgroup::create("adapt", 960 << 20) else {
        eprintln!("NOTE: cannot create a cgroup v1 memory group here (needs root); not checked");
        return;
    };
    let h = TestHome::new();
    std::fs::write(h.path().join("config.toml"), "history_sample_secs = 0.2\n").unwrap();
    let gemma = gemma();
    for i in 0..4 {
        let doc = h.doc(&format!("d{i}.txt"), &prose(20 + i, 60));
        h.enqueue_on(&doc, &gemma, "16");
    }
    let out = cg.run_in(
        &h,
        &["worker", "--drain", "--n-ctx", "1024", "--parallel", "8"],
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert_eq!(count(&h.status(), "succeeded"), 4);
    // No OOM kill in the group.
    assert_eq!(oom_kills(&cg), 0);
    // The gate brought B down from 8 for the first load, and the history recorded it.
    let b: Vec<u64> = h
        .results(&[])
        .iter()
        .map(|r| r["parameters"]["n_seq"].as_u64().unwrap())
        .collect();
    assert!(b.iter().any(|&b| b < 8), "some job ran below B=8: {b:?}");
    let mem: serde_json::Value =
        serde_json::from_str(&h.ok(&["memory", "--window", "1h", "--json"])).unwrap();
    let sampled: Vec<u64> = mem["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["batch"].as_u64().unwrap())
        .collect();
    assert!(
        sampled.iter().any(|&b| (1..8).contains(&b)),
        "the history shows B below 8: {sampled:?}"
    );
    let latest_limit = mem["current"]["cgroup"].clone();
    assert!(
        latest_limit.is_null(),
        "this command ran outside the group: {mem}"
    );

    // The same limit with the adaptive batch size (readings every half second): with no
    // calibration the controller starts at what memory allows (below 4: B = 4 is predicted
    // at ~833 MiB, past the free memory), growth is refused by the gate rather than tried;
    // still no OOM kill.
    std::fs::write(
        h.path().join("config.toml"),
        "history_sample_secs = 0.2\nadapt_interval_secs = 0.5\n",
    )
    .unwrap();
    for i in 0..6 {
        let doc = h.doc(&format!("a{i}.txt"), &prose(40 + i, 80));
        h.enqueue_on(&doc, &gemma, "48");
    }
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
    assert_eq!(count(&h.status(), "succeeded"), 10);
    assert_eq!(oom_kills(&cg), 0);
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
