//! Interactive chats ahead of batch work (issue 11 §3) on the real llama.cpp: chats on the
//! batch's model take the youngest batch sequence's slot, a chat on another model makes the
//! batch yield and resume; with batch-invariant kernels none of it changes a batch answer or a
//! chat answer, and no batch job is charged an attempt.

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;

const DOCS: usize = 6;

/// A worker's HTTP address and API key.
struct Api {
    addr: String,
    key: String,
}

impl Api {
    /// `POST /v1/chat/completions` with `body` (through curl); the answer's JSON.
    fn chat(&self, body: &Value) -> Value {
        let out = Command::new("curl")
            .args(["-sS", "--fail-with-body", "--max-time", "120"])
            .args(["-H", &format!("Authorization: Bearer {}", self.key)])
            .args(["-H", "Content-Type: application/json"])
            .args(["--data-binary", &body.to_string()])
            .arg(format!("http://{}/v1/chat/completions", self.addr))
            .output()
            .expect("run curl");
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "chat {body}: {said} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(&said).unwrap_or_else(|e| panic!("{e}: {said}"))
    }
}

/// The question a person asks of `model`, the `i`th time; greedy, short.
fn question(model: &str, i: usize) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": format!("In one sentence: what is {} plus {}?", i + 2, i + 5)}],
        "max_tokens": 16,
        "temperature": 0,
    })
}

fn content(answer: &Value) -> String {
    answer["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no content: {answer}"))
        .to_string()
}

/// A home with both models registered and the documents enqueued on gemma, greedy, long
/// enough answers that sequences are in flight when the chats come.
fn home() -> TestHome {
    home_with(DOCS, |i| 30 + 10 * i)
}

/// [`home`] with `docs` documents, the `i`th of `words(i)` words.
fn home_with(docs: usize, words: impl Fn(usize) -> usize) -> TestHome {
    let h = TestHome::new();
    h.ok(&["models", "add", s(&gemma()), "--name", "gemma"]);
    h.ok(&["models", "add", s(&tiny()), "--name", "tiny"]);
    for i in 0..docs {
        h.doc(&format!("d{i}.txt"), &prose(40 + i, words(i)));
    }
    h.ok(&[
        "enqueue",
        s(&h.path().join("docs")),
        "--model",
        "gemma",
        "--prompt",
        "Retell the following story in your own words, at length: {text}",
        "--max-tokens",
        "48",
        "--temperature",
        "0",
    ]);
    h
}

/// The worker's flags in both runs: two sequences, batch-invariant kernels.
const FLAGS: [&str; 6] = [
    "--parallel",
    "2",
    "--n-ctx",
    "1024",
    "--kernels",
    "batch-invariant",
];

/// Every job succeeded with one attempt; (custom id, answer), sorted.
fn answers(h: &TestHome) -> Vec<(String, String)> {
    answers_by_id(h, |r| r["attempts"].as_u64().unwrap())
        .into_iter()
        .map(|(id, answer, attempts)| {
            assert_eq!(attempts, 1, "{id}: a chat cost the batch an attempt");
            (id, answer)
        })
        .collect()
}

#[test]
fn chats_ahead_of_a_batch_change_none_of_its_answers_and_cost_it_no_attempt() {
    let h = home();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut args = vec!["--http", addr.as_str()];
    args.extend_from_slice(&FLAGS);
    let mut worker = h.spawn_worker(&args);
    h.wait_for_worker(&mut worker);
    let api = Api {
        addr: addr.clone(),
        key: h.ok(&["api-key"]).trim().to_string(),
    };
    // Each chat comes while both slots decode batch sequences: the youngest gives its slot.
    let both_busy = |what: &str| {
        wait_until(Duration::from_secs(120), what, || {
            let st = h.status();
            st["worker"]["in_flight"] == 2 && st["worker"]["loaded_model"].is_string()
        })
    };
    let mut during = Vec::new();
    for i in 0..3 {
        both_busy("two batch sequences in flight");
        during.push(content(&api.chat(&question("gemma", i))));
    }
    // One on the other model: the batch's jobs go back to the queue, tiny answers, the batch
    // resumes on gemma from its jobs' last finished chunks.
    both_busy("the batch runs again");
    let other = api.chat(&question("tiny", 0));
    assert_eq!(other["model"], "tiny", "{other}");
    let elsewhere = content(&other);
    wait_until(Duration::from_secs(600), "the batch drains", || {
        count(&h.status(), "succeeded") == DOCS as u64
    });
    let live = &h.status()["worker"];
    assert_eq!(live["chats_served"], 4, "{live}");
    assert!(
        live["preempted"].as_u64().unwrap() >= 1,
        "no batch sequence gave its slot: {live}"
    );
    // The same questions on an idle worker: the same answers.
    for (i, was) in during.iter().enumerate() {
        assert_eq!(&content(&api.chat(&question("gemma", i))), was, "chat {i}");
    }
    assert_eq!(content(&api.chat(&question("tiny", 0))), elsewhere);
    let names: Vec<String> = (0..DOCS).map(|i| format!("d{i}.txt")).collect();
    let mut show = vec!["show", "--json"];
    show.extend(names.iter().map(String::as_str));
    let yielded = h.ok(&show);
    sigterm(&worker);
    wait_exit(&mut worker, Duration::from_secs(60)).expect("the worker stops");
    let with_chats = answers(&h);
    assert!(
        yielded.contains("yielded to an interactive request"),
        "no job recorded the yield to tiny: {yielded}"
    );

    // The same documents drained with no chat at all.
    let quiet = home();
    let mut args = vec!["worker", "--drain"];
    args.extend_from_slice(&FLAGS);
    quiet.ok(&args);
    let without = answers(&quiet);
    assert_eq!(with_chats.len(), DOCS);
    assert_eq!(
        with_chats, without,
        "chats ahead of the batch changed its answers"
    );
    assert!(with_chats
        .iter()
        .any(|(_, a)| a.split_whitespace().count() > 10));
}

/// Chats that come while batch steps decode stop those steps (llama.cpp's abort callback), and
/// the session takes back what each stopped step had not finished: a stopped ubatch's cells
/// are gone, the ones before it stay, and a sequence whose logits were lost decodes its last
/// token again. Prompts longer than gemma 3's 512-token sliding window (so that its
/// window layers overwrite cells as the prompts grow), two clients asking over each other (so
/// that steps carrying a chat's tokens stop too), batch-invariant kernels: every batch answer
/// and every chat answer is the one given without any of it, and many steps did stop.
#[test]
fn chats_that_stop_batch_steps_change_no_answer() {
    const LONG: usize = 4;
    let words = |i: usize| 640 + 40 * i;
    let flags = [
        "--parallel",
        "3",
        "--n-ctx",
        "2048",
        "--kernels",
        "batch-invariant",
    ];
    let h = home_with(LONG, words);
    let addr = format!("127.0.0.1:{}", free_port());
    let mut args = vec!["--http", addr.as_str()];
    args.extend_from_slice(&flags);
    let mut worker = h.spawn_worker(&args);
    h.wait_for_worker(&mut worker);
    let api = std::sync::Arc::new(Api {
        addr: addr.clone(),
        key: h.ok(&["api-key"]).trim().to_string(),
    });
    wait_until(Duration::from_secs(120), "the batch decodes", || {
        h.status()["worker"]["in_flight"].as_u64() >= Some(1)
    });
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..2)
        .map(|c| {
            let (api, done) = (api.clone(), done.clone());
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let mut n = 0usize;
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    let k = (n + c) % 3;
                    let mut q = question("gemma", k);
                    q["max_tokens"] = json!(6);
                    got.push((k, content(&api.chat(&q))));
                    n += 1;
                    // Uneven gaps: the chats come at every point of a step.
                    std::thread::sleep(Duration::from_millis(120 + (n * 97 + c * 61) as u64 % 350));
                }
                got
            })
        })
        .collect();
    wait_until(Duration::from_secs(900), "the batch drains", || {
        count(&h.status(), "succeeded") == LONG as u64
    });
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let during: Vec<(usize, String)> = clients
        .into_iter()
        .flat_map(|t| t.join().expect("a client"))
        .collect();
    let live = h.status()["worker"].clone();
    let stopped = live["steps_stopped"].as_u64().unwrap();
    assert!(stopped >= 10, "only {stopped} steps stopped: {live}");
    // The same questions on the idle worker: each answer asked during the batch is this one.
    for k in 0..3 {
        let mut q = question("gemma", k);
        q["max_tokens"] = json!(6);
        let idle = content(&api.chat(&q));
        for (_, was) in during.iter().filter(|(j, _)| *j == k) {
            assert_eq!(was, &idle, "question {k} asked during the batch");
        }
    }
    sigterm(&worker);
    wait_exit(&mut worker, Duration::from_secs(60)).expect("the worker stops");
    let with_chats = answers(&h);

    let quiet = home_with(LONG, words);
    let mut args = vec!["worker", "--drain"];
    args.extend_from_slice(&flags);
    quiet.ok(&args);
    assert_eq!(with_chats.len(), LONG);
    assert_eq!(
        with_chats,
        answers(&quiet),
        "steps stopped for chats changed the batch's answers ({stopped} stopped, {} chats)",
        during.len()
    );
}

/// A crash while a chat decodes beside one batch job charges the job nothing: the chat may
/// have been the cause, and it is no stored job to charge. The job is a suspect, runs alone
/// next, succeeds, and keeps no crash record. (The job names the model by its path, the chat
/// by its registered name: one model, so they share the batch.)
#[test]
fn a_crash_while_a_chat_decodes_beside_one_job_charges_the_job_nothing() {
    use std::io::BufRead;
    let h = TestHome::new();
    h.ok(&["models", "add", s(&tiny()), "--name", "tiny"]);
    // Both generate many tokens: the job (a few seconds alone) still runs when the chat has
    // started (a fraction of a second after it).
    let doc = h.doc("story.txt", &prose(5, 100));
    h.enqueue_tiny(&doc, "1000");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut worker = h.spawn_worker(&["--http", &addr, "--parallel", "2", "--n-ctx", "4096"]);
    h.wait_for_worker(&mut worker);
    let key = h.ok(&["api-key"]).trim().to_string();
    wait_until(Duration::from_secs(60), "the job runs", || {
        h.show("1")["state"] == "running"
    });
    let pid = runner(&h);
    // A long streamed chat; once its first content arrives it is decoding beside the job.
    let body = json!({
        "model": "tiny",
        "messages": [{"role": "user", "content": "Tell me a long story."}],
        "max_tokens": 4000,
        "stream": true,
    });
    let mut curl = Command::new("curl")
        .args(["-sSN", "-H", &format!("Authorization: Bearer {key}")])
        .args(["-H", "Content-Type: application/json"])
        .args(["--data-binary", &body.to_string()])
        .arg(format!("http://{addr}/v1/chat/completions"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run curl");
    let mut lines = std::io::BufReader::new(curl.stdout.take().unwrap()).lines();
    let first = lines
        .find(|l| {
            l.as_ref()
                .is_ok_and(|l| l.contains("\"content\":\"") && !l.contains("\"content\":\"\""))
        })
        .expect("a content chunk");
    assert!(first.is_ok());
    kill("SEGV", pid);
    // Generous: the whole suite shares 2 cores meanwhile.
    wait_until(Duration::from_secs(300), "the job succeeds", || {
        h.show("1")["state"] == "succeeded"
    });
    let _ = curl.wait();
    let shown = h.show("1");
    let reasons = reasons(&shown);
    assert!(
        reasons.iter().any(|r| r.contains(
            "the worker crashed (SIGSEGV) with 1 job and interactive chats in flight; not charged"
        )),
        "{reasons:?}"
    );
    assert!(
        !reasons.iter().any(|r| r.contains("yielded")),
        "the chat names the job's file otherwise (tiny, not its path): the same model, one batch: {reasons:?}"
    );
    assert!(shown["crashes"].is_null(), "nothing charged: {shown}");
    assert_eq!(shown["attempts"], 1, "{shown}");
    assert!(
        !h.path().join("chats-decoding").exists(),
        "the witness is taken"
    );
    sigterm(&worker);
    wait_exit(&mut worker, Duration::from_secs(30)).expect("the worker stops");
}
