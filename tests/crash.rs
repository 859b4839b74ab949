//! Crashes and stops: `kill -9` at random moments loses nothing and runs no finished chunk
//! twice; SIGTERM checkpoints and exits 0.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use crate::common::*;
use crate::socket::{sigterm, wait_exit};

/// (job id, chunk) → how many times the chunk was recorded as finished.
fn chunk_runs(h: &TestHome, jobs: u64) -> HashMap<(u64, u64), usize> {
    let ids: Vec<String> = (1..=jobs).map(|i| i.to_string()).collect();
    let mut args: Vec<&str> = vec!["show", "--json"];
    args.extend(ids.iter().map(String::as_str));
    let shown: Value = serde_json::from_str(&h.ok(&args)).unwrap();
    let mut runs = HashMap::new();
    for job in shown.as_array().unwrap() {
        let id = job["id"].as_u64().unwrap();
        for e in job["events"].as_array().unwrap() {
            if let Some(chunk) = e["chunk"].as_u64() {
                *runs.entry((id, chunk)).or_default() += 1;
            }
        }
    }
    runs
}

fn chunks_done(h: &TestHome, jobs: u64) -> usize {
    chunk_runs(h, jobs).values().sum()
}

fn events_to(shown: &Value, state: &str) -> usize {
    shown["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["to"] == state)
        .count()
}

#[test]
fn kill_9_at_random_moments_loses_nothing_and_repeats_no_finished_chunk() {
    let h = TestHome::new();
    for i in 0..8 {
        h.doc(&format!("short{i}.txt"), &prose(i, 40 + 30 * i));
    }
    for i in 0..4 {
        h.doc(&format!("long{i}.txt"), &prose(50 + i, 1800));
    }
    let docs = h.path().join("docs");
    h.enqueue_tiny(&docs, "48");
    let jobs = 12;

    let mut rng = Rng(seed("kill -9 test"));
    let mut finished_at_kill = Vec::new();
    for _ in 0..10 {
        let before = chunks_done(&h, jobs);
        let mut worker = h.spawn_worker(&["--n-ctx", "384"]);
        h.wait_for_worker(&mut worker);
        // A random moment: after 0 to 2 more chunks finished, then 0 to 400 ms into the next
        // (model load, prompt decode, generation, a checkpoint being written...).
        let more = rng.range(0, 3) as usize;
        wait_until(Duration::from_secs(120), "chunks finish", || {
            chunks_done(&h, jobs) >= before + more
        });
        std::thread::sleep(Duration::from_millis(rng.range(0, 400)));
        if worker.try_wait().unwrap().is_some() {
            panic!("the worker exited by itself");
        }
        worker.kill().unwrap(); // SIGKILL
        worker.wait().unwrap();
        // With no worker, the CLI opens the store itself (the socket left behind is stale).
        let status = h.status();
        assert!(status["worker"].is_null());
        finished_at_kill.push((count(&status, "succeeded"), chunks_done(&h, jobs)));
    }
    eprintln!("(jobs finished, chunks finished) at each kill: {finished_at_kill:?}");
    assert!(
        finished_at_kill[9].0 < jobs,
        "the kills came while work was left: {finished_at_kill:?}"
    );
    assert!(
        finished_at_kill[9].1 > finished_at_kill[0].1,
        "work went on across kills: {finished_at_kill:?}"
    );

    h.ok(&["worker", "--drain", "--n-ctx", "384"]);
    let status = h.status();
    assert_eq!(count(&status, "succeeded"), jobs, "{status}");
    let results = h.results(&[]);
    assert_eq!(results.len(), jobs as usize, "no result lost or duplicated");
    let mut ids: Vec<u64> = results.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    ids.dedup();
    assert_eq!(ids.len(), jobs as usize);
    for id in 1..=jobs {
        let shown = h.show(&id.to_string());
        assert_eq!(
            events_to(&shown, "succeeded"),
            1,
            "job {id} succeeded exactly once"
        );
        assert_eq!(
            shown["attempts"], 1,
            "a killed worker does not use up attempts: {shown}"
        );
    }
    let runs = chunk_runs(&h, jobs);
    let repeated: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "finished chunks ran again: {repeated:?}"
    );
    let long_chunks = runs
        .keys()
        .filter(|(id, _)| {
            results
                .iter()
                .any(|r| r["id"] == *id && r["custom_id"].as_str().unwrap().starts_with("long"))
        })
        .count();
    assert!(
        long_chunks >= 4 * 3,
        "the long documents were chunked: {long_chunks} chunks"
    );
}

#[test]
fn sigterm_mid_job_checkpoints_exits_zero_and_resumes() {
    let h = TestHome::new();
    let long = h.doc("long.txt", &prose(8, 4000));
    h.enqueue_tiny(&long, "64");
    let mut worker = h.spawn_worker(&["--n-ctx", "384"]);
    h.wait_for_worker(&mut worker);
    wait_until(Duration::from_secs(60), "a chunk finishes", || {
        !chunk_runs(&h, 1).is_empty()
    });
    sigterm(&worker);
    let st = wait_exit(&mut worker, Duration::from_secs(10)).expect("SIGTERM exits within 10 s");
    assert!(st.success(), "SIGTERM exits 0: {st}");
    let shown = h.show("1");
    assert_eq!(shown["state"], "queued", "released, not failed: {shown}");
    assert_eq!(shown["attempts"], 0);
    let done_before: usize = chunk_runs(&h, 1).len();
    assert!(done_before >= 1);

    h.ok(&["worker", "--drain", "--n-ctx", "384"]);
    let shown = h.show("1");
    assert_eq!(shown["state"], "succeeded");
    let events = shown["events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("resuming after {done_before} finished chunks"))),
        "{events:?}"
    );
    assert!(chunk_runs(&h, 1).values().all(|n| *n == 1));
}

/// Send `sig` (a `kill` name: ABRT, SEGV, KILL…) to `pid`.
fn kill(sig: &str, pid: u64) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// The pid of the worker's runner (the process that runs inference), once it answers.
fn runner(h: &TestHome) -> u64 {
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

/// Wait until job `id`'s state is one of `states`.
fn wait_state(h: &TestHome, id: &str, states: &[&str]) {
    wait_until(
        Duration::from_secs(90),
        &format!("job {id} {states:?}"),
        || states.contains(&h.show(id)["state"].as_str().unwrap()),
    );
}

#[test]
fn a_job_that_crashes_the_worker_alone_is_dead_after_three_crashes_and_the_worker_goes_on() {
    let h = TestHome::new();
    let poison = h.doc("poison.txt", &prose(11, 6000));
    h.enqueue_tiny(&poison, "64");
    let mut worker = h.spawn_worker(&["--n-ctx", "512", "--parallel", "2"]);
    h.wait_for_worker(&mut worker);
    // Each time the job runs, the process running inference dies by a signal it could have
    // raised itself (llama.cpp's asserts abort; a stack overflow ends in an abort; a bad
    // pointer in native code is a SIGSEGV): charged to the job, which was alone.
    let mut runners = Vec::new();
    for (n, sig) in ["ABRT", "SEGV", "ABRT"].into_iter().enumerate() {
        wait_state(&h, "1", &["running"]);
        let pid = runner(&h);
        assert!(
            !runners.contains(&pid),
            "a new runner each time: {runners:?}"
        );
        runners.push(pid);
        kill(sig, pid);
        // (The job is queued again only for a moment: the next runner claims it at once.)
        wait_until(Duration::from_secs(60), "the crash is charged", || {
            h.show("1")["crashes"]["charged"].as_u64() == Some(n as u64 + 1)
        });
        assert!(worker.try_wait().unwrap().is_none(), "the supervisor lives");
    }
    let shown = h.show("1");
    assert_eq!(shown["state"], "dead", "{shown}");
    assert!(
        shown["error"]
            .as_str()
            .unwrap()
            .starts_with("the worker crashed 3 times running this job alone (last: SIGABRT)"),
        "{shown}"
    );
    assert_eq!(shown["crashes"]["charged"], 3);
    assert_eq!(shown["attempts"], 0, "crashes are not attempts");
    // The worker goes on with other work.
    let doc = h.doc("fine.txt", "a short note about the river");
    h.enqueue_tiny(&doc, "8");
    wait_state(&h, "2", &["succeeded"]);
    sigterm(&worker);
    let st = wait_exit(&mut worker, Duration::from_secs(15)).expect("the worker stops");
    assert!(st.success(), "{st}");
}

#[test]
fn a_crash_with_several_jobs_in_flight_charges_none_and_runs_each_alone() {
    let h = TestHome::new();
    for i in 0..3 {
        h.doc(&format!("s{i}.txt"), &prose(30 + i, 1500));
    }
    h.enqueue_tiny(&h.path().join("docs"), "32");
    let mut worker = h.spawn_worker(&["--n-ctx", "512", "--parallel", "4"]);
    h.wait_for_worker(&mut worker);
    wait_until(Duration::from_secs(60), "all three run", || {
        count(&h.status(), "running") == 3
    });
    kill("SEGV", runner(&h));
    for id in ["1", "2", "3"] {
        wait_state(&h, id, &["succeeded"]);
    }
    for id in ["1", "2", "3"] {
        let shown = h.show(id);
        let reasons: Vec<&str> = shown["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["reason"].as_str().unwrap())
            .collect();
        assert!(
            reasons.iter().any(|r| r.contains(
                "the worker crashed (SIGSEGV) with 3 jobs in flight; not charged: runs alone next"
            )),
            "{reasons:?}"
        );
        assert!(
            shown["crashes"].is_null(),
            "cleared once it ran alone: {shown}"
        );
        assert_eq!(shown["attempts"], 1);
    }
    sigterm(&worker);
    wait_exit(&mut worker, Duration::from_secs(15)).expect("the worker stops");
}

#[test]
fn kill_9_of_the_runner_charges_nothing_and_loses_nothing() {
    let h = TestHome::new();
    for i in 0..6 {
        h.doc(&format!("k{i}.txt"), &prose(70 + i, 200 + 150 * i));
    }
    h.enqueue_tiny(&h.path().join("docs"), "48");
    let jobs = 6;
    let mut rng = Rng(seed("kill -9 of the runner"));
    let mut worker = h.spawn_worker(&["--n-ctx", "384", "--parallel", "4"]);
    h.wait_for_worker(&mut worker);
    // Five kills at random moments while work is left (the OOM killer's signal too).
    let mut kills = 0;
    while kills < 5 && count(&h.status(), "succeeded") < jobs {
        let pid = runner(&h);
        std::thread::sleep(Duration::from_millis(rng.range(200, 1500)));
        kill("KILL", pid);
        kills += 1;
        wait_until(Duration::from_secs(30), "a new runner", || {
            runner(&h) != pid
        });
    }
    wait_until(Duration::from_secs(180), "every job succeeds", || {
        count(&h.status(), "succeeded") == jobs
    });
    assert!(worker.try_wait().unwrap().is_none(), "the supervisor lives");
    for id in 1..=jobs {
        let shown = h.show(&id.to_string());
        assert!(shown["crashes"].is_null(), "nothing charged: {shown}");
        assert_eq!(events_to(&shown, "succeeded"), 1);
        assert_eq!(shown["attempts"], 1, "{shown}");
    }
    let repeated: Vec<_> = chunk_runs(&h, jobs)
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    assert!(
        repeated.is_empty(),
        "finished chunks ran again: {repeated:?}"
    );
    sigterm(&worker);
    wait_exit(&mut worker, Duration::from_secs(15)).expect("the worker stops");
}

/// `kill -9` an enqueue of `dir` at random moments (`kills` times, reopening the store after
/// each), then run it to the end: exactly one job per document, and the store opens.
fn enqueue_survives_kills(
    h: &TestHome,
    dir: &std::path::Path,
    docs: usize,
    kills: usize,
    rng: &mut Rng,
) {
    let tiny = tiny();
    let mut partial = Vec::new();
    // At least `kills` kills, and until one lands in the middle of an enqueue (on a loaded
    // machine the first batches come later: the moments stretch with each round).
    for round in 0..20u64 {
        let mid = partial.iter().any(|&n| n > 0 && n < docs as u64);
        if partial.len() >= kills && mid {
            break;
        }
        let mut child = h
            .command(&["enqueue", s(dir), "--model", s(&tiny)])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.range(50, 900) + round * 300));
        let _ = child.kill();
        child.wait().unwrap();
        // The store opens (through the worker, or directly) and counts what went in.
        let total = h.status()["counts"]
            .as_object()
            .unwrap()
            .values()
            .map(|n| n.as_u64().unwrap())
            .sum::<u64>();
        partial.push(total);
    }
    eprintln!("jobs in the store after each kill: {partial:?}");
    assert!(
        partial.iter().any(|&n| n > 0 && n < docs as u64),
        "some kill came in the middle of the enqueue: {partial:?}"
    );
    let out = h.ok(&["enqueue", s(dir), "--model", s(&tiny), "--json"]);
    let outcomes: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(outcomes.as_array().unwrap().len(), docs);
    let listed: Value = serde_json::from_str(&h.ok(&["list", "--json"])).unwrap();
    let mut ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["custom_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), docs, "one job per document");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), docs, "no document twice");
}

#[test]
fn kill_9_during_bulk_enqueues_leaves_each_document_in_once_or_not_at_all() {
    let docs = 3000;
    let mut rng = Rng(seed("kill -9 during enqueue"));
    // Without a worker (the command writes the store itself), then through one.
    for through_worker in [false, true] {
        let h = TestHome::new();
        for i in 0..docs {
            h.doc(
                &format!("e/d{i:04}.txt"),
                &format!("document {i}: {}", prose(i, 12)),
            );
        }
        let dir = h.path().join("docs/e");
        let worker = through_worker.then(|| {
            let mut w = h.spawn_worker(&["--n-ctx", "256"]);
            h.wait_for_worker(&mut w);
            h.ok(&["pause"]);
            w
        });
        enqueue_survives_kills(&h, &dir, docs, 5, &mut rng);
        if let Some(mut w) = worker {
            assert!(w.try_wait().unwrap().is_none(), "the worker lives");
            sigterm(&w);
            wait_exit(&mut w, Duration::from_secs(15)).expect("the worker stops");
        }
    }
}
