//! The CLI against a running worker: every verb goes through the socket; signals; a second
//! worker is refused.

use std::time::{Duration, Instant};

use crate::common::*;

#[test]
fn every_verb_works_through_a_running_worker() {
    let h = TestHome::new();
    let tiny = tiny();
    let mut worker = h.spawn_worker(&["--n-ctx", "512"]);
    h.wait_for_worker(&mut worker);
    let socket = h.path().join("qwen3q.sock");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // A second worker is refused while this one lives.
    let line = h.fails(&["worker"], 4);
    assert!(line.contains("another worker is already running"), "{line}");

    for i in 0..20 {
        h.doc(&format!("d{i:02}.txt"), &prose(i, 20 + i * 20));
    }
    h.doc("long.txt", &prose(77, 2400));
    let docs = h.path().join("docs");
    h.enqueue_tiny(&docs, "24");
    let status = h.status();
    assert_eq!(
        status["worker"]["pid"].as_u64(),
        Some(worker.id() as u64),
        "{status}"
    );

    // --wait blocks until every job is done.
    h.ok(&["results", "--wait"]);
    let results = h.results(&[]);
    assert_eq!(results.len(), 21);
    assert!(
        results.iter().all(|r| r["state"] == "succeeded"),
        "{results:?}"
    );
    let long = results
        .iter()
        .find(|r| r["custom_id"] == "long.txt")
        .unwrap();
    assert!(long["chunks"].as_u64().unwrap() >= 3);

    // pause: nothing is claimed; resume: it runs.
    h.ok(&["pause"]);
    assert_eq!(h.status()["paused"], true);
    let extra = h.doc("extra.txt", &prose(1, 30));
    let cancel_me = h.doc("cancel-me.txt", &prose(2, 30));
    h.ok(&[
        "enqueue",
        s(&extra),
        s(&cancel_me),
        "--model",
        s(&tiny),
        "--max-tokens",
        "8",
    ]);
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(count(&h.status(), "queued"), 2, "paused: nothing claimed");
    assert!(h.ok(&["cancel", "cancel-me.txt"]).contains("cancelled #23"));
    h.ok(&["resume"]);
    h.ok(&["results", "--wait", "extra.txt"]);
    let status = h.status();
    assert_eq!(count(&status, "succeeded"), 22);
    assert_eq!(count(&status, "cancelled"), 1);

    // retry a cancelled job; list and show over the socket.
    assert!(h.ok(&["retry", "23"]).contains("queued again #23"));
    h.ok(&["results", "--wait", "23"]);
    assert_eq!(h.show("23")["state"], "succeeded");
    let listed: serde_json::Value =
        serde_json::from_str(&h.ok(&["list", "--state", "succeeded", "--json"])).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 23);
    let missing = h.fails(&["show", "no-such-job"], 5);
    assert!(missing.contains("no job no-such-job"), "{missing}");

    // The idle worker still holds the model, and says so (with its bytes and last use).
    wait_until(Duration::from_secs(10), "the worker idles", || {
        h.status()["worker"]["waiting"].is_string()
    });
    let status = h.status();
    let models = status["worker"]["models"].as_array().unwrap();
    assert_eq!(models.len(), 1, "{status}");
    assert_eq!(models[0]["name"], "qwen3-tiny");
    assert!(
        models[0]["bytes"].as_u64().unwrap() > 30_000_000,
        "{status}"
    );
    assert!(models[0]["last_used"].as_u64().unwrap() > 0);
    let text = h.ok(&["status"]);
    assert!(
        text.contains("model:   qwen3-tiny") && text.contains("idle, last used"),
        "{text}"
    );

    // SIGTERM: exit 0 within 10 s, socket gone, nothing lost.
    sigterm(&worker);
    let st = wait_exit(&mut worker, Duration::from_secs(10))
        .expect("worker exits within 10 s of SIGTERM");
    assert!(st.success(), "{st}");
    assert!(!socket.exists(), "the socket is removed");
    assert_eq!(count(&h.status(), "succeeded"), 23);
}

#[test]
fn cancelling_a_running_job_stops_it_at_once() {
    let h = TestHome::new();
    let tiny = tiny();
    let long = h.doc("long.txt", &prose(4, 6000));
    h.enqueue_on(&long, &tiny, "64");
    let mut worker = h.spawn_worker(&["--n-ctx", "512"]);
    h.wait_for_worker(&mut worker);
    wait_until(Duration::from_secs(30), "the job starts", || {
        h.show("1")["state"] == "running"
    });
    let started = Instant::now();
    assert!(h.ok(&["cancel", "1"]).contains("cancelled #1"));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(h.show("1")["state"], "cancelled");
    sigterm(&worker);
    assert!(wait_exit(&mut worker, Duration::from_secs(10))
        .unwrap()
        .success());
}

#[test]
fn the_worker_records_memory_history_and_memory_reports_it() {
    let h = TestHome::new();
    std::fs::write(h.path().join("config.toml"), "history_sample_secs = 0.2\n").unwrap();
    let tiny = tiny();
    let doc = h.doc("m.txt", &prose(3, 200));
    h.enqueue_on(&doc, &tiny, "32");
    let mut worker = h.spawn_worker(&[]);
    h.wait_for_worker(&mut worker);
    h.ok(&["results", "--wait"]);
    std::thread::sleep(Duration::from_millis(1500));
    let v: serde_json::Value =
        serde_json::from_str(&h.ok(&["memory", "--window", "1h", "--json"])).unwrap();
    let n = v["samples"].as_u64().unwrap();
    assert!(n >= 5, "samples every 0.2 s: {v}");
    assert!(v["current"]["total"].as_u64().unwrap() > 0);
    let latest = &v["latest"];
    assert!(
        latest["process_rss"].as_u64().unwrap() > 10_000_000,
        "{latest}"
    );
    assert_eq!(latest["models"][0][0], "qwen3-tiny", "{latest}");
    assert!(
        ["increasing", "decreasing", "stable"].contains(&v["trend"]["direction"].as_str().unwrap())
    );
    assert!(!v["sparkline"].as_str().unwrap().is_empty());
    // A plot of it.
    let svg = h.path().join("memory.svg");
    assert!(h
        .ok(&["memory", "--window", "1h", "--plot", s(&svg)])
        .contains("wrote"));
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.starts_with("<svg") && text.contains("<polyline"),
        "{}",
        &text[..200]
    );
    // And as PNG; other formats are refused with one line.
    let png = h.path().join("memory.png");
    h.ok(&["memory", "--window", "1h", "--plot", s(&png)]);
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 10_000);
    let err = h.fails(&["memory", "--plot", "memory.jpg"], 3);
    assert!(err.contains(".svg or .png"), "{err}");
    // The text form, then the same history with no worker (the command opens the store).
    let text = h.ok(&["memory"]);
    assert!(
        text.contains("trend:") && text.contains("worker:   B="),
        "{text}"
    );
    sigterm(&worker);
    wait_exit(&mut worker, Duration::from_secs(10)).expect("worker exits");
    let v: serde_json::Value =
        serde_json::from_str(&h.ok(&["memory", "--window", "1h", "--json"])).unwrap();
    assert!(
        v["samples"].as_u64().unwrap() >= n,
        "history outlives the worker: {v}"
    );
}

/// The pid of the worker's runner (the process that owns the store and runs inference).
fn runner_pid(h: &TestHome) -> u32 {
    h.status()["worker"]["runner_pid"]
        .as_u64()
        .expect("a runner") as u32
}

/// A process's peak resident memory (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        * 1024
}

#[test]
fn a_request_line_without_end_is_cut_off_and_the_worker_goes_on() {
    use std::io::{BufRead, Write};
    let h = TestHome::new();
    let mut worker = h.spawn_worker(&[]);
    h.wait_for_worker(&mut worker);
    let runner = runner_pid(&h);
    // 600 MiB with no newline: the worker reads at most its frame limit (256 MiB), answers
    // with one error line and closes the connection. It used to buffer all of it.
    let mut stream = std::os::unix::net::UnixStream::connect(h.path().join("qwen3q.sock")).unwrap();
    let block = vec![b'x'; 1 << 20];
    let mut sent = 0;
    for _ in 0..600 {
        if stream.write_all(&block).is_err() {
            break; // closed by the worker once over the limit
        }
        sent += 1;
    }
    assert!(
        sent >= 256,
        "the worker read at least its limit: {sent} MiB"
    );
    let mut answer = String::new();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let _ = std::io::BufReader::new(&stream).read_line(&mut answer);
    assert!(answer.contains("over 256 MiB"), "{answer:?}");
    assert!(worker.try_wait().unwrap().is_none(), "the worker is alive");
    // Its peak stayed near the limit, not the 600 MiB sent.
    let peak = peak_rss(runner);
    eprintln!("worker peak RSS {} MiB", peak >> 20);
    assert!(peak < 450 << 20, "peak RSS {} MiB", peak >> 20);
    // And it still answers.
    assert_eq!(count(&h.status(), "queued"), 0);
    sigterm(&worker);
    wait_exit(&mut worker, Duration::from_secs(10)).expect("worker exits");
}

#[test]
fn listing_and_reading_every_job_goes_page_by_page_and_keeps_the_worker_flat() {
    let h = TestHome::new();
    let jobs = 20_000;
    let batch = h.path().join("many.jsonl");
    let lines: Vec<String> = (0..jobs)
        .map(|i| {
            serde_json::json!({"custom_id": format!("job-{i:05}"),
                "body": {"messages": [{"role": "user", "content": format!("note {i}: {}", prose(i, 20))}]}})
            .to_string()
        })
        .collect();
    std::fs::write(&batch, lines.join("\n")).unwrap();
    let mut worker = h.spawn_worker(&[]);
    h.wait_for_worker(&mut worker);
    h.ok(&["pause"]);
    h.ok(&["enqueue", "--batch", s(&batch), "--model", s(&tiny())]);
    let runner = runner_pid(&h);
    let before = peak_rss(runner);
    // Every job, as JSON and as results: pages of at most a thousand on the socket.
    let listed: serde_json::Value = serde_json::from_str(&h.ok(&["list", "--json"])).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), jobs);
    assert_eq!(
        listed[jobs - 1]["custom_id"],
        format!("job-{:05}", jobs - 1)
    );
    let results = h.ok(&["results", "--jsonl"]);
    assert_eq!(results.lines().count(), jobs);
    let limited: serde_json::Value =
        serde_json::from_str(&h.ok(&["list", "--json", "--limit", "1500"])).unwrap();
    assert_eq!(limited.as_array().unwrap().len(), 1500);
    // The worker read a page at a time: its peak moved by a few MiB, not by the whole list.
    let after = peak_rss(runner);
    eprintln!(
        "worker peak RSS {} MiB before listing, {} MiB after",
        before >> 20,
        after >> 20
    );
    assert!(
        after - before < 16 << 20,
        "{} MiB more",
        (after - before) >> 20
    );
    sigterm(&worker);
    wait_exit(&mut worker, Duration::from_secs(15)).expect("the worker stops");
}
