//! Crashes and stops: `kill -9` at random moments loses nothing and runs no finished chunk
//! twice; SIGTERM checkpoints and exits 0.

use std::time::Duration;

use crate::common::kills::{self, chunk_runs, events_to};
use crate::common::*;

#[test]
fn kill_9_at_random_moments_loses_nothing_and_repeats_no_finished_chunk() {
    // The short run of `examples/kill_loop.rs`'s drains (there: gemma at B=8, 50 kills).
    let h = TestHome::new();
    let mut rng = Rng(seed("kill -9 during drains"));
    let figures = kills::Drains {
        model: &tiny(),
        short_docs: 8,
        long_docs: 4,
        max_tokens: "48",
        worker_args: &["--n-ctx", "384"],
        kills: 6,
        more_chunks: 3,
        pause_ms: (0, 400),
    }
    .run(&h, &mut rng);
    eprintln!("{figures}");
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
        let reasons = reasons(&shown);
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

#[test]
fn kill_9_during_bulk_enqueues_leaves_each_document_in_once_or_not_at_all() {
    // The short run of `examples/kill_loop.rs`'s enqueues.
    let docs = 3000;
    let files = TestHome::new();
    let dir = kills::enqueue_documents(&files, docs);
    let mut rng = Rng(seed("kill -9 during enqueue"));
    // Without a worker (the command writes the store itself), then through one.
    for through_worker in [false, true] {
        let figures = kills::enqueues(&files.bin, &dir, &tiny(), docs, 3, through_worker, &mut rng);
        eprintln!("{figures}");
    }
}

#[test]
fn kill_9_during_migrations_of_a_large_store_loses_nothing() {
    // 3,000 jobs written by the schema-4 binary; the short run of `examples/kill_loop.rs`'s
    // migrations.
    let h = TestHome::new();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/store-v4-large.tar.gz");
    let mut rng = Rng(seed("kill -9 during migrations"));
    let figures = kills::migrations(&h, &fixture, 5, &mut rng, kills::check_large_v4_store);
    eprintln!("{figures}");
    kills::a_migrated_store_runs(&h);
}
