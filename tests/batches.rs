//! Batches (issue 11 §1) on the real binary and the tiny model through llama.cpp: every
//! enqueue that adds a job makes one, with its name, metadata and deadline; its status and
//! counts follow its jobs, with and without a worker; results, cancel and retry take a batch.

use std::time::Duration;

use serde_json::Value;

use crate::common::*;

fn batches(h: &TestHome) -> Vec<Value> {
    serde_json::from_str(&h.ok(&["batches", "--json"])).unwrap()
}

fn batch(h: &TestHome, id: &str) -> Value {
    serde_json::from_str(&h.ok(&["batch", "show", id, "--json"])).unwrap()
}

/// `enqueue ARGS… --model tiny --max-tokens 4 --temperature 0`: its stderr (the closing line).
fn enqueue(h: &TestHome, args: &[&str]) -> String {
    let tiny = tiny();
    let mut all = vec!["enqueue"];
    all.extend_from_slice(args);
    all.extend([
        "--model",
        s(&tiny),
        "--max-tokens",
        "4",
        "--temperature",
        "0",
    ]);
    let out = h.run(&all);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "enqueue {args:?}: {err}");
    err
}

#[test]
fn an_enqueue_makes_a_batch_whose_status_follows_its_jobs_to_completed() {
    let h = TestHome::new();
    let docs: Vec<_> = (0..3)
        .map(|i| h.doc(&format!("n{i}.txt"), &prose(i, 40)))
        .collect();
    let dir = h.path().join("docs");
    let said = enqueue(
        &h,
        &[
            s(&dir),
            "--name",
            "night run",
            "--meta",
            "team=ops",
            "--meta",
            "ticket=Q-7",
            "--within",
            "8h",
        ],
    );
    assert!(said.contains("queued 3 in batch_1"), "{said}");
    let b = batch(&h, "batch_1");
    assert_eq!(b["object"], "batch");
    assert_eq!(
        b["status"], "in_progress",
        "sealed when the enqueue ended: {b}"
    );
    assert_eq!(b["name"], "night run");
    assert_eq!(b["metadata"]["team"], "ops");
    assert_eq!(b["metadata"]["ticket"], "Q-7");
    assert_eq!(b["request_counts"]["total"], 3);
    let created = b["created_at"].as_u64().unwrap();
    let deadline = b["deadline"].as_u64().unwrap();
    assert!(
        (8 * 3600 - 5..=8 * 3600 + 5).contains(&(deadline - created)),
        "{b}"
    );
    assert_eq!(b["late"], false);

    // Its jobs name it; `list --batch` lists them.
    let listed: Vec<Value> =
        serde_json::from_str(&h.ok(&["list", "--batch", "batch_1", "--json"])).unwrap();
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|j| j["batch"] == "batch_1"), "{listed:?}");

    // The same documents again: jobs already, no batch; one more file makes batch_2 with
    // only itself.
    let again = enqueue(&h, &[s(&dir), "--name", "again"]);
    assert!(again.contains("queued 0, already queued 3"), "{again}");
    assert!(!again.contains("batch_"), "{again}");
    assert_eq!(batches(&h).len(), 1);
    let extra = h.doc("extra/x.txt", "one more document to read");
    let said = enqueue(&h, &[s(&extra), s(&docs[0])]);
    assert!(
        said.contains("queued 1 in batch_2, already queued 1"),
        "{said}"
    );
    let b2 = batch(&h, "batch_2");
    assert_eq!(b2["request_counts"]["total"], 1, "{b2}");

    // `status` shows the open batches with their progress.
    let st = h.ok(&["status"]);
    assert!(st.contains("batch:   batch_2"), "{st}");
    assert!(
        st.contains("batch:   batch_1      in_progress 0/3 done  night run  by "),
        "{st}"
    );
    let report = h.status();
    assert_eq!(report["open_batch_count"], 2, "{report}");

    // Drained, both are completed; closed batches leave `status`.
    h.ok(&["worker", "--drain", "--n-ctx", "512"]);
    let b = batch(&h, "batch_1");
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(b["request_counts"]["completed"], 3, "{b}");
    assert_eq!(batch(&h, "batch_2")["status"], "completed");
    let st = h.ok(&["status"]);
    assert!(!st.contains("batch:"), "{st}");
    let listed = batches(&h);
    assert_eq!(
        listed.iter().map(|b| b["id"].clone()).collect::<Vec<_>>(),
        ["batch_2", "batch_1"],
        "newest first"
    );

    // The batch's results, as OpenAI's output file: one line per job, in enqueue order.
    let out = h.path().join("out.jsonl");
    h.ok(&[
        "results",
        "--batch",
        "batch_1",
        "--format",
        "openai",
        "-o",
        s(&out),
    ]);
    let lines: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<&str> = lines
        .iter()
        .map(|l| l["custom_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["n0.txt", "n1.txt", "n2.txt"]);
    assert!(
        lines.iter().all(|l| l["response"]["status_code"] == 200),
        "{lines:?}"
    );

    // A batch that does not exist: a clear line and "not found".
    let line = h.fails(&["results", "--batch", "batch_9"], 5);
    assert!(line.contains("no batch batch_9"), "{line}");
    let line = h.fails(&["batch", "show", "nine"], 2);
    assert!(line.contains("not a batch id"), "{line}");
}

#[test]
fn a_batch_cancelled_through_the_worker_keeps_its_finished_work_and_a_retry_reopens_it() {
    let h = TestHome::new();
    // A batch file, so the batch's requests are chat jobs as OpenAI's are.
    let lines: Vec<String> = (0..6)
        .map(|i| {
            serde_json::json!({
                "custom_id": format!("req-{i}"),
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"messages": [{"role": "user", "content": prose(i, 30)}], "max_tokens": 48}
            })
            .to_string()
        })
        .collect();
    let file = h.doc("night.jsonl", &(lines.join("\n") + "\n"));
    let mut worker = h.spawn_worker(&["--n-ctx", "512", "--parallel", "1"]);
    h.wait_for_worker(&mut worker);
    h.ok(&["pause"]);
    let said = enqueue(&h, &["--batch", s(&file), "--by", "23:59"]);
    assert!(said.contains("queued 6 in batch_1"), "{said}");
    let b = batch(&h, "batch_1");
    assert_eq!(b["status"], "in_progress", "{b}");
    assert_eq!(b["source"], format!("--batch {}", file.display()));
    // While paused, `show` says where a queued job stands in line.
    assert_eq!(h.show("req-5")["ahead"], 5);
    assert!(h
        .ok(&["show", "req-0"])
        .contains("position: 0 ready jobs ahead of it"));

    // Two run, then the batch is cancelled: the rest are cancelled, the two keep results.
    h.ok(&["resume"]);
    wait_until(
        Duration::from_secs(60),
        "two jobs of the batch finish",
        || batch(&h, "batch_1")["request_counts"]["completed"].as_u64() >= Some(2),
    );
    h.ok(&["pause"]);
    let out = h.run(&["cancel", "--batch", "batch_1"]);
    assert!(
        out.status.success() || out.status.code() == Some(3),
        "{out:?}"
    );
    wait_until(Duration::from_secs(30), "the batch is cancelled", || {
        batch(&h, "batch_1")["status"] == "cancelled"
    });
    let b = batch(&h, "batch_1");
    let done = b["request_counts"]["completed"].as_u64().unwrap();
    assert!(done >= 2, "{b}");
    let cancelled = b["counts"]["cancelled"].as_u64().unwrap();
    assert!(
        cancelled >= 1,
        "the cancel came before the batch ended: {b}"
    );
    assert_eq!(cancelled + done, 6, "{b}");
    assert!(b["cancelling_at"].is_u64(), "{b}");
    let kept = h.results(&["--batch", "batch_1"]);
    assert_eq!(
        kept.iter().filter(|r| r["state"] == "succeeded").count() as u64,
        done
    );

    // Retried, its cancelled jobs run to completed; the succeeded ones keep their answers.
    let answers_before: Vec<Value> = kept
        .iter()
        .filter(|r| r["state"] == "succeeded")
        .cloned()
        .collect();
    h.ok(&["retry", "--batch", "batch_1"]);
    assert_eq!(batch(&h, "batch_1")["status"], "in_progress");
    h.ok(&["resume"]);
    wait_until(
        Duration::from_secs(60),
        "the retried batch completes",
        || batch(&h, "batch_1")["status"] == "completed",
    );
    assert_eq!(batch(&h, "batch_1")["request_counts"]["completed"], 6);
    let after = h.results(&["--batch", "batch_1"]);
    for r in &answers_before {
        let same = after.iter().find(|a| a["id"] == r["id"]).unwrap();
        assert_eq!(
            same["finished_ms"], r["finished_ms"],
            "not run again: {same}"
        );
    }
    sigterm(&worker);
    wait_exit(&mut worker, Duration::from_secs(30)).expect("the worker stops");
    // Without a worker, the store answers the same.
    assert_eq!(batch(&h, "batch_1")["status"], "completed");
}

#[test]
fn jobs_not_started_by_the_deadline_expire_into_the_error_file_and_the_batch_says_expired() {
    let h = TestHome::new();
    h.doc("a.txt", &prose(1, 30));
    h.doc("b.txt", &prose(2, 30));
    let said = enqueue(&h, &[s(&h.path().join("docs")), "--within", "1s"]);
    assert!(said.contains("queued 2 in batch_1"), "{said}");
    std::thread::sleep(Duration::from_millis(1500));
    // Late: `status` says so before any worker has looked.
    let st = h.ok(&["status"]);
    assert!(st.contains("passed"), "{st}");
    h.ok(&["worker", "--drain", "--n-ctx", "512"]);
    let b = batch(&h, "batch_1");
    assert_eq!(b["status"], "expired", "{b}");
    assert_eq!(b["counts"]["expired"], 2, "{b}");
    assert_eq!(b["request_counts"]["failed"], 2, "{b}");
    let out = h.path().join("out.jsonl");
    let errors = h.path().join("errors.jsonl");
    h.ok(&[
        "results",
        "--batch",
        "batch_1",
        "--format",
        "openai",
        "-o",
        s(&out),
        "--error-file",
        s(&errors),
    ]);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "");
    let lines: Vec<Value> = std::fs::read_to_string(&errors)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines.iter().all(|l| l["error"]["code"] == "batch_expired"),
        "{lines:?}"
    );
    // A person's retry runs them after all.
    h.ok(&["retry", "--batch", "batch_1"]);
    h.ok(&["worker", "--drain", "--n-ctx", "512"]);
    assert_eq!(batch(&h, "batch_1")["status"], "completed");
}

/// `plan` reads the documents as `enqueue` would, splits them with the model's own tokenizer
/// into the chunks the worker then really makes, predicts the memory at B, and estimates the
/// time once the model is calibrated — and enqueues nothing.
#[test]
fn plan_counts_the_chunks_the_worker_makes_and_enqueues_nothing() {
    let h = TestHome::new();
    h.ok(&["models", "add", s(&tiny()), "--name", "tiny"]);
    h.doc("short.txt", &prose(1, 30));
    h.doc("long.txt", &prose(2, 1500));
    let dir = h.path().join("docs");
    let args = [
        "plan",
        s(&dir),
        "--model",
        "tiny",
        "--max-tokens",
        "16",
        "--n-ctx",
        "512",
        "--json",
    ];
    let plan: Value = serde_json::from_str(&h.ok(&args)).unwrap();
    let t = &plan["totals"];
    assert_eq!(t["documents"], 2, "{plan}");
    assert!(t["tokens"].as_u64().unwrap() > 1500, "{plan}");
    let chunks = t["chunks"].as_u64().unwrap();
    assert!(chunks >= 4, "the long document is split: {plan}");
    // Summaries of several chunks end with a reduce: one more generation.
    assert_eq!(t["generations"].as_u64().unwrap(), chunks + 1, "{plan}");
    assert_eq!(t["max_new_tokens"].as_u64().unwrap(), 16 * (chunks + 1));
    assert_eq!(plan["parallel"], 4);
    assert!(
        plan["memory"]["total"].as_u64().unwrap() > plan["memory"]["weights"].as_u64().unwrap()
    );
    assert!(plan["tokens_per_sec"].is_null(), "not calibrated: {plan}");
    assert_eq!(h.status()["counts"]["queued"], 0, "nothing enqueued");

    // Calibrated, the plan has a time.
    h.ok(&[
        "calibrate",
        "tiny",
        "--max-parallel",
        "4",
        "--max-tokens",
        "8",
        "--n-ctx",
        "512",
    ]);
    let plan: Value = serde_json::from_str(&h.ok(&args)).unwrap();
    assert_eq!(plan["tokens_per_sec_from"], "calibration", "{plan}");
    assert!(plan["seconds_at_most"].is_u64(), "{plan}");
    assert!(h
        .ok(&args[..args.len() - 1])
        .contains("nothing was enqueued"));

    // The worker makes the chunks the plan counted.
    enqueue_16(&h, &dir);
    h.ok(&["worker", "--drain", "--n-ctx", "512"]);
    let made: u64 = h
        .results(&[])
        .iter()
        .map(|r| r["chunks"].as_u64().unwrap())
        .sum();
    assert_eq!(made, chunks);
}

fn enqueue_16(h: &TestHome, dir: &std::path::Path) {
    let tiny = tiny();
    h.ok(&["enqueue", s(dir), "--model", s(&tiny), "--max-tokens", "16"]);
}
