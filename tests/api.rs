//! The HTTP API (issue 11 §2) driven by the official `openai` Python package (pinned in
//! tests/api/requirements.txt, in a venv `scripts/api-venv.sh` makes) against the real worker
//! on the tiny model through llama.cpp: the batch workflow, chat completions (plain, streamed,
//! stop, JSON schema) ahead of a running batch, a cancel midway, a wrong key, an oversized
//! upload; and the same batch file through the CLI gives the same answers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::common::*;

/// The venv's python: `QWEN3Q_API_PYTHON` (scripts/test.sh sets it), else made now.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("QWEN3Q_API_PYTHON") {
        return PathBuf::from(p);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/api-venv.sh");
    let out = Command::new("bash")
        .arg(script)
        .output()
        .expect("run api-venv.sh");
    assert!(
        out.status.success(),
        "api-venv.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn request(id: &str, content: &str, max_tokens: u32) -> String {
    json!({
        "custom_id": id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "tiny",
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": content}],
            "max_tokens": max_tokens,
            "temperature": 0,
        }
    })
    .to_string()
}

/// The night's file: five requests, and one whose prompt cannot fit the context (it dies:
/// the error file holds it).
fn night_file(h: &TestHome) -> PathBuf {
    let mut lines: Vec<String> = (0..5)
        .map(|i| request(&format!("night-{i}"), &prose(i, 20), 8))
        .collect();
    lines.push(request("too-long", &prose(9, 3000), 8));
    h.doc("night.jsonl", &(lines.join("\n") + "\n"))
}

#[test]
fn the_openai_package_runs_a_batch_chats_ahead_of_another_cancels_it_and_is_refused_a_wrong_key_and_a_large_file(
) {
    let python = python();
    let h = TestHome::new();
    let tiny = tiny();
    h.ok(&["models", "add", s(&tiny), "--name", "tiny"]);
    let night = night_file(&h);
    let slow_lines: Vec<String> = (0..10)
        .map(|i| request(&format!("slow-{i}"), &prose(20 + i, 30), 96))
        .collect();
    let slow = h.doc("slow.jsonl", &(slow_lines.join("\n") + "\n"));
    let addr = format!("127.0.0.1:{}", free_port());
    let mut worker = h.spawn_worker(&["--http", &addr, "--parallel", "1", "--n-ctx", "512"]);
    h.wait_for_worker(&mut worker);
    let key = h.ok(&["api-key"]).trim().to_string();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api/batch_flow.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(format!("http://{addr}/v1"))
        .arg(&key)
        .arg(&night)
        .arg(&slow)
        .output()
        .expect("run python");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "batch_flow.py failed:\n{said}");
    let seen: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");

    assert_eq!(seen["models"], json!(["tiny"]));
    let n = &seen["night"];
    assert_eq!(n["status"], "completed", "{n}");
    assert_eq!(
        n["counts"],
        json!({"total": 6, "completed": 5, "failed": 1}),
        "{n}"
    );
    assert_eq!(n["answers"].as_object().unwrap().len(), 5, "{n}");
    assert_eq!(n["errors"], json!({"too-long": "job_failed"}), "{n}");
    let c = &seen["slow"];
    let done = c["counts"]["completed"].as_u64().unwrap();
    assert!((2..10).contains(&done), "cancelled midway: {c}");
    assert_eq!(c["answers"].as_object().unwrap().len() as u64, done, "{c}");
    let errors = c["errors"].as_object().unwrap();
    assert_eq!(errors.len() as u64, 10 - done, "{c}");
    assert!(errors.values().all(|code| code == "batch_cancelled"), "{c}");
    assert_eq!(seen["wrong_key"], 401);
    assert_eq!(seen["too_large"], 413);
    let chats = &seen["chats"];
    assert!(chats["streamed_chunks"].as_u64().unwrap() >= 2, "{chats}");
    assert_eq!(chats["n2"], 400, "{chats}");

    // The worker took all of it and runs on; the CLI sees the API's batches. The four chats
    // answered are counted, not stored; with one slot, a batch request gave it up to them.
    assert!(worker.try_wait().unwrap().is_none(), "the worker exited");
    let live = &h.status()["worker"];
    assert_eq!(live["chats_served"], 4, "{live}");
    assert!(live["preempted"].as_u64().unwrap() >= 1, "{live}");
    assert_eq!(live["chats"], json!([]), "{live}");
    let listed: Vec<Value> = serde_json::from_str(&h.ok(&["batches", "--json"])).unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1]["input_file_id"], "file-1");
    sigterm(&worker);
    wait_exit(&mut worker, std::time::Duration::from_secs(30)).expect("the worker stops");

    // The same file through the CLI, in a home of its own: the same answers.
    let cli = TestHome::new();
    cli.ok(&["models", "add", s(&tiny), "--name", "tiny"]);
    let out = cli.run(&[
        "enqueue",
        "--batch",
        s(&night),
        "--model",
        "tiny",
        "--max-attempts",
        "1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cli.ok(&["worker", "--drain", "--parallel", "1", "--n-ctx", "512"]);
    let output = cli.ok(&["results", "--format", "openai"]);
    let by_cli: BTreeMap<String, Value> = output
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|l| {
            let answer = l["response"]["body"]["choices"][0]["message"]["content"].clone();
            (l["custom_id"].as_str().unwrap().to_string(), answer)
        })
        .collect();
    let by_api: BTreeMap<String, Value> = n["answers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(by_cli, by_api);
}

/// schemathesis (pinned beside `openai`) fuzzes the server from its own OpenAPI document
/// (`GET /openapi.json`, fetched with the key): every operation, examples, coverage, fuzzing
/// and stateful runs that follow the document's links from an upload to its file and from a
/// batch to its cancel, with every check (no 5xx, statuses, content types and bodies as
/// documented, schema-valid requests accepted and invalid ones refused). Bounded: 30 examples
/// an operation with a fixed seed (a few hundred cases, seconds on the tiny model); a longer
/// run is the same command with a larger `--max-examples`.
#[test]
fn the_server_holds_to_its_openapi_document_under_fuzzing() {
    let python = python();
    let h = TestHome::new();
    // Chat completions answer in at most 8 tokens here: hundreds of fuzzed chats fit the budget.
    std::fs::write(h.path().join("config.toml"), "chat_max_tokens = 8\n").unwrap();
    // A schema-valid chat whose prompt is longer than the model's context is refused with a
    // 400, as OpenAI refuses one (context_length_exceeded): a limit of the loaded model that
    // no static document can state. Only for that operation is a 400 an acceptable answer to
    // schema-valid data; everywhere else the default expectations hold.
    std::fs::write(
        h.path().join("schemathesis.toml"),
        "[[operations]]\ninclude-operation-id = \"createChatCompletion\"\n\
         checks.positive_data_acceptance.expected-statuses = \
         [\"2xx\", \"400\", \"401\", \"403\", \"404\", \"429\", \"5xx\"]\n",
    )
    .unwrap();
    h.ok(&["models", "add", s(&tiny()), "--name", "tiny"]);
    let addr = format!("127.0.0.1:{}", free_port());
    let mut worker = h.spawn_worker(&["--http", &addr, "--n-ctx", "512"]);
    h.wait_for_worker(&mut worker);
    let key = h.ok(&["api-key"]).trim().to_string();
    // The document as the server serves it.
    let doc = h.path().join("openapi.json");
    let got = Command::new("curl")
        .args(["-sf", "-H", &format!("Authorization: Bearer {key}")])
        .arg(format!("http://{addr}/openapi.json"))
        .arg("-o")
        .arg(&doc)
        .status()
        .expect("run curl");
    assert!(got.success(), "GET /openapi.json");
    let st = python.parent().unwrap().join("schemathesis");
    let out = Command::new(st)
        .arg("run")
        .arg(&doc)
        .args(["--url", &format!("http://{addr}")])
        .args(["-H", &format!("Authorization: Bearer {key}")])
        .args(["--max-examples", "30", "--seed", "1", "--workers", "1"])
        .args(["--checks", "all", "--no-color"])
        .current_dir(h.path())
        .output()
        .expect("run schemathesis");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "schemathesis found failures:\n{said}");
    // "704 generated, 704 passed, 22 skipped": a few hundred cases ran, all passed.
    let line = said
        .lines()
        .find(|l| l.contains(" generated, "))
        .unwrap_or_else(|| panic!("no summary:\n{said}"));
    let generated: u64 = line.split_whitespace().next().unwrap().parse().unwrap();
    assert!(generated >= 300, "{line}");
    assert!(line.contains(&format!("{generated} passed")), "{line}");
    assert!(
        worker.try_wait().unwrap().is_none(),
        "the worker survived the fuzzing"
    );
}
