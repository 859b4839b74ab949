//! A person's requests against a live worker, for jobs in every state: the worker survives each
//! one, and each answer is a clear line. A request never moves a job the worker runs behind its
//! back (a retry of a running job used to make the worker exit).

use std::process::Output;
use std::time::Duration;

use crate::common::*;

/// The worker is still running.
fn alive(worker: &mut SpawnedWorker, after: &str) {
    assert!(
        worker.try_wait().unwrap().is_none(),
        "the worker exited after {after}"
    );
}

/// Every line the command wrote to stderr names the job and says what happened; none is a
/// panic, a backtrace or an internal error.
fn clear(out: &Output, what: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    for line in err.lines() {
        assert!(
            line.starts_with("qwen3q: #") || line.starts_with("qwen3q: no job"),
            "{what}: {err}"
        );
    }
    assert!(
        !err.contains("panicked") && !err.contains("internal"),
        "{what}: {err}"
    );
    err
}

#[test]
fn every_request_on_a_job_in_every_state_leaves_the_worker_running() {
    let h = TestHome::new();
    let tiny = tiny();
    let broken = h.path().join("broken.gguf");
    std::fs::copy(&tiny, &broken).unwrap();
    let enqueue = |name: &str, text: &str, model: &std::path::Path, extra: &[&str]| {
        let doc = h.doc(name, text);
        let mut args = vec!["enqueue", s(&doc), "--model", s(model)];
        if !extra.contains(&"--max-tokens") {
            args.extend(["--max-tokens", "4"]);
        }
        args.extend_from_slice(extra);
        h.ok(&args);
    };
    // 1 succeeds; 2 dies (one attempt on a model cut in half after enqueue); 3 fails and waits
    // for its retry; 4 and 5 wait for their start time; 6 is long and runs.
    enqueue("ok.txt", "a short note", &tiny, &[]);
    enqueue("dead.txt", "never runs", &broken, &["--max-attempts", "1"]);
    enqueue(
        "failed.txt",
        "fails first",
        &broken,
        &["--max-attempts", "3"],
    );
    let bytes = std::fs::read(&broken).unwrap();
    std::fs::write(&broken, &bytes[..bytes.len() / 2]).unwrap();
    let mut worker = h.spawn_worker(&["--n-ctx", "512"]);
    h.wait_for_worker(&mut worker);
    wait_until(Duration::from_secs(60), "jobs 1–3 settle", || {
        let st = |id: &str| h.show(id)["state"].as_str().unwrap().to_string();
        st("1") == "succeeded" && st("2") == "dead" && st("3") == "failed"
    });
    enqueue("cancel-me.txt", "later", &tiny, &["--not-before", "1h"]);
    enqueue("queued.txt", "later too", &tiny, &["--not-before", "1h"]);
    h.ok(&["cancel", "4"]);
    enqueue("long.txt", &prose(4, 6000), &tiny, &["--max-tokens", "64"]);
    wait_until(Duration::from_secs(30), "job 6 runs", || {
        h.show("6")["state"] == "running"
    });
    let states = [
        ("1", "succeeded"),
        ("2", "dead"),
        ("3", "failed"),
        ("4", "cancelled"),
        ("5", "queued"),
        ("6", "running"),
    ];
    for (id, state) in states {
        assert_eq!(h.show(id)["state"], state, "job {id}");
    }

    // Requests that read or change nothing of a job, with every state present.
    for args in [
        vec!["status"],
        vec!["status", "--json"],
        vec!["list"],
        vec!["list", "--json"],
        vec!["show", "1", "2", "3", "4", "5", "6"],
        vec!["results", "--jsonl"],
        vec!["memory", "--json"],
        vec!["models", "list"],
        vec!["prune", "--older-than", "1h"],
        vec!["pause"],
        vec!["resume"],
    ] {
        h.ok(&args);
        alive(&mut worker, &args.join(" "));
    }
    assert_eq!(h.show("6")["state"], "running");

    // A retry of each: the running job is refused (the worker owns it), the queued one is
    // already queued, the others go back to the queue.
    for (id, state) in states {
        let out = h.run(&["retry", id]);
        let err = clear(&out, &format!("retry of a {state} job"));
        alive(&mut worker, &format!("retry of a {state} job"));
        match state {
            "running" => {
                assert_eq!(out.status.code(), Some(3), "{err}");
                assert!(err.contains("the worker owns it"), "{err}");
                assert_eq!(h.show(id)["state"], "running");
            }
            "queued" => {
                assert!(out.status.success(), "{err}");
                assert!(String::from_utf8_lossy(&out.stdout).contains("already queued"));
            }
            _ => {
                assert!(out.status.success(), "{state}: {err}");
                assert!(String::from_utf8_lossy(&out.stdout).contains("queued again"));
            }
        }
    }
    // Jobs 1–4 run again (1 and 4 succeed, 2 and 3 fail on the broken model) while 6 runs on.
    alive(&mut worker, "the retries");

    // A cancel of each: whatever state it has reached by now, a clear answer.
    for (id, _) in states {
        let out = h.run(&["cancel", id]);
        let err = clear(&out, &format!("cancel of job {id}"));
        alive(&mut worker, &format!("cancel of job {id}"));
        assert!(
            matches!(out.status.code(), Some(0) | Some(3)),
            "cancel {id}: {err}"
        );
    }
    assert_eq!(h.show("6")["state"], "cancelled", "the running job stops");
    // Jobs that do not exist, by number and by name.
    for verb in ["retry", "cancel", "show"] {
        let out = h.run(&[verb, "99", "nosuch.txt"]);
        assert_eq!(out.status.code(), Some(5), "{verb}");
        clear(&out, verb);
        alive(&mut worker, verb);
    }
    sigterm(&worker);
    let st = wait_exit(&mut worker, Duration::from_secs(10)).expect("worker exits");
    assert!(st.success(), "{st}");
}
