//! Stores written by earlier schema versions still open, with everything in them.

use crate::common::*;

/// A home whose store is the fixture `name` (a `store/` directory, tar-gzipped).
fn home_with_fixture(name: &str) -> TestHome {
    let h = TestHome::new();
    h.unpack_store(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    );
    h
}

/// The fixtures' jobs: 1 succeeded (fx-a.txt, with an answer), 2 queued, 3 cancelled; their
/// results.
fn fixture_jobs(h: &TestHome) -> Vec<serde_json::Value> {
    let status = h.status();
    assert_eq!(count(&status, "succeeded"), 1, "{status}");
    assert_eq!(count(&status, "queued"), 1);
    assert_eq!(count(&status, "cancelled"), 1);
    let results = h.results(&[]);
    assert_eq!(results[0]["custom_id"], "fx-a.txt");
    assert!(results[0]["answer"].is_string());
    results
}

/// The fixtures name their model at /tmp/fixture-model.gguf: put the tiny model there,
/// atomically (tests run side by side).
fn fixture_model_in_place(h: &TestHome) {
    let at = std::path::Path::new("/tmp/fixture-model.gguf");
    if !at.exists() {
        let tmp = h.path().join("fixture-model.gguf");
        std::fs::copy(tiny(), &tmp).unwrap();
        std::fs::rename(&tmp, at)
            .or_else(|_| std::fs::copy(&tmp, at).map(|_| ()))
            .unwrap();
    }
}

#[test]
fn a_store_written_by_schema_v1_opens_with_its_jobs() {
    let h = home_with_fixture("store-v1.tar.gz");
    let status = h.status();
    assert_eq!(count(&status, "succeeded"), 1, "{status}");
    assert_eq!(count(&status, "queued"), 1);
    assert_eq!(count(&status, "cancelled"), 1);
    let results = h.results(&[]);
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["custom_id"], "fx-a.txt");
    assert!(results[0]["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    assert!(results[0]["answer"].is_string());
    // Fields schema 2 added: the upgrade fills them in.
    assert_eq!(results[0]["parameters"]["n_seq"], 1);
    assert!(results[0]["json"].is_null());
    assert!(results[0]["constraint"].is_null());
    let shown = h.show("2");
    assert_eq!(shown["state"], "queued");
    assert!(!shown["events"].as_array().unwrap().is_empty());
    // The store keeps working after the upgrade: a new job gets the next id.
    let doc = h.doc("new.txt", "a new document after the upgrade");
    let tiny = tiny();
    assert!(h
        .ok(&["enqueue", s(&doc), "--model", s(&tiny)])
        .contains("queued #4"));
}

#[test]
fn a_store_written_by_schema_v2_opens_with_its_jobs_models_and_history() {
    let h = home_with_fixture("store-v2.tar.gz");
    let results = fixture_jobs(&h);
    assert_eq!(results[0]["model"], "fx-tiny");
    // Fields schema 3 added: the upgrade fills them in.
    assert!(results[0]["choice"].is_null());
    assert!(results[0]["quality"].is_null());
    // The registry and its measured load survived (inspect reads the model file).
    fixture_model_in_place(&h);
    let models: serde_json::Value =
        serde_json::from_str(&h.ok(&["models", "list", "--json"])).unwrap();
    assert_eq!(models[0]["name"], "fx-tiny", "{models}");
    let inspect: serde_json::Value =
        serde_json::from_str(&h.ok(&["models", "inspect", "fx-tiny", "--json"])).unwrap();
    assert!(
        inspect["memory"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["measured"].is_object()),
        "{inspect}"
    );
    // The memory history decodes (its samples are from 2026-11-26; a window of a year).
    let mem: serde_json::Value =
        serde_json::from_str(&h.ok(&["memory", "--window", "8760h", "--json"])).unwrap();
    assert!(mem["samples"].as_u64().unwrap() >= 1, "{mem}");
}

#[test]
fn a_store_written_by_schema_v3_opens_with_its_jobs_models_calibrations_and_history() {
    let h = home_with_fixture("store-v3.tar.gz");
    let results = fixture_jobs(&h);
    assert_eq!(results[0]["model"], "fx-tiny");
    // Schema 4 added crash records: none in an upgraded store.
    let shown = h.show("2");
    assert_eq!(shown["state"], "queued");
    assert!(shown["crashes"].is_null(), "{shown}");
    // The registry, the measured loads and the calibration curve decode as they were written.
    let models: serde_json::Value =
        serde_json::from_str(&h.ok(&["models", "list", "--json"])).unwrap();
    assert_eq!(models[0]["name"], "fx-tiny", "{models}");
    fixture_model_in_place(&h);
    let inspect: serde_json::Value =
        serde_json::from_str(&h.ok(&["models", "inspect", "fx-tiny", "--json"])).unwrap();
    assert_eq!(
        inspect["calibrations"].as_array().unwrap().len(),
        1,
        "{inspect}"
    );
    assert!(inspect["calibrations"][0]["knee"].is_u64(), "{inspect}");
    let mem: serde_json::Value =
        serde_json::from_str(&h.ok(&["memory", "--window", "8760h", "--json"])).unwrap();
    assert!(mem["samples"].as_u64().unwrap() >= 1, "{mem}");
    // The store keeps working: the queued job runs (its model is the fixture's), a new job gets
    // the next id, and values of both versions sit side by side.
    h.ok(&["worker", "--drain"]);
    assert_eq!(h.show("2")["state"], "succeeded");
    let doc = h.doc("new.txt", "a new document after the upgrade");
    assert!(h
        .ok(&["enqueue", s(&doc), "--model", s(&tiny())])
        .contains("queued #4"));
}

/// The batch file `store-v4.tar.gz` was written with (see the fixtures' README).
const FX_CHAT: &str = concat!(
    r#"{"custom_id":"chat-1","method":"POST","url":"/v1/chat/completions","body":{"model":"fx-tiny","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Name a river."}],"max_tokens":8,"temperature":0}}"#,
    "\n",
    r#"{"custom_id":"chat-2","method":"POST","url":"/v1/chat/completions","body":{"model":"fx-tiny","messages":[{"role":"user","content":"Say yes.\nThen say no."}],"max_tokens":8,"seed":7,"user":"fixture"}}"#,
    "\n",
);

#[test]
fn a_store_written_by_schema_v4_opens_with_its_conversations_and_new_identities() {
    let h = home_with_fixture("store-v4.tar.gz");
    let status = h.status();
    assert_eq!(count(&status, "succeeded"), 3, "{status}");
    assert_eq!(count(&status, "queued"), 1);
    assert_eq!(count(&status, "cancelled"), 1);
    // Schema 5 keeps a chat's turns in the job and its messages as the document.
    let chat = h.show("chat-1");
    assert_eq!(
        chat["task"],
        serde_json::json!({"name": "chat", "turns": [
            {"role": "system", "bytes": 9}, {"role": "user", "bytes": 13}]}),
        "{chat}"
    );
    let results = h.results(&["chat-1", "chat-2"]);
    assert!(
        results.iter().all(|r| r["answer"].is_string()),
        "{results:?}"
    );
    fixture_model_in_place(&h);
    // The same file again finds both requests (dedupe keys were rebuilt)…
    let batch = h.doc("fx-chat.jsonl", FX_CHAT);
    let out = h.ok(&[
        "enqueue",
        "--batch",
        s(&batch),
        "--model",
        "fx-tiny",
        "--json",
    ]);
    let outcomes: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(outcomes[0]["id"], 2, "{outcomes}");
    assert_eq!(outcomes[1]["id"], 3, "{outcomes}");
    assert!(outcomes[0]["outcome"]
        .as_str()
        .unwrap()
        .starts_with("exists"));
    // …and chat-1's messages under another id are another job (schema 4 made them one).
    let other = h.doc("other.jsonl", &FX_CHAT.replace("chat-1", "chat-3"));
    let out = h.run(&["enqueue", "--batch", s(&other), "--model", "fx-tiny"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("queued #6 chat-3"));
    // The upgraded store runs: the queued document, and a chat from its stored turns.
    h.ok(&["worker", "--drain"]);
    assert_eq!(h.show("4")["state"], "succeeded");
    let chat3 = h.show("chat-3");
    assert_eq!(chat3["state"], "succeeded", "{chat3}");
}

#[test]
fn a_store_written_by_schema_v5_keeps_its_parted_document_and_writes_large_ones_to_files() {
    let h = home_with_fixture("store-v5.tar.gz");
    let status = h.status();
    assert_eq!(count(&status, "succeeded"), 2, "{status}");
    assert_eq!(count(&status, "queued"), 1);
    assert!(h.results(&["chat-1"])[0]["answer"].is_string());
    assert!(h.document_files().is_empty(), "nothing moved out");
    fixture_model_in_place(&h);
    // A large document after the upgrade goes to a file; a small one stays in the store.
    let big: String = (0..3000)
        .map(|n| format!("New line {n} of a large document.\n"))
        .collect();
    assert!(big.len() > 64 * 1024);
    let big_doc = h.doc("new-big.txt", &big);
    let small_doc = h.doc("new-small.txt", "a small document after the upgrade");
    let out = h.ok(&[
        "enqueue",
        s(&big_doc),
        s(&small_doc),
        "--model",
        "fx-tiny",
        "--max-tokens",
        "8",
    ]);
    assert!(
        out.contains("queued #4") && out.contains("queued #5"),
        "{out}"
    );
    let files = h.document_files();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(std::fs::read_to_string(&files[0]).unwrap(), big);
    // The same file again is the same job, and leaves no second file behind.
    assert!(h
        .ok(&[
            "enqueue",
            s(&big_doc),
            "--model",
            "fx-tiny",
            "--max-tokens",
            "8"
        ])
        .contains("exists (queued) #4"));
    assert_eq!(h.document_files().len(), 1);
    // Both kinds run: the schema-5 document from its parts, the new one from its file. The
    // worker reads what it was given: each job's prompt holds its document's start.
    h.ok(&["worker", "--drain"]);
    for id in ["3", "4", "5"] {
        let job = h.show(id);
        assert_eq!(job["state"], "succeeded", "{job}");
    }
    let r = h.results(&["fx-big.txt", "new-big.txt"]);
    assert!(
        r.iter()
            .all(|r| r["usage"]["prompt_tokens"].as_u64().unwrap() > 1000),
        "{r:?}"
    );
    // Pruning the jobs removes the file with them.
    assert!(h.ok(&["prune", "--older-than", "0s"]).contains("pruned 5"));
    assert!(h.document_files().is_empty());
}

#[test]
fn a_store_written_by_schema_v6_gets_totals_per_state_that_later_moves_keep() {
    let h = home_with_fixture("store-v6.tar.gz");
    // The migration counted what the store held…
    let status = h.status();
    assert_eq!(count(&status, "succeeded"), 1, "{status}");
    assert_eq!(count(&status, "queued"), 2, "{status}");
    assert_eq!(count(&status, "cancelled"), 1, "{status}");
    assert_eq!(h.document_files().len(), 1, "fx-big.txt stays in its file");
    fixture_model_in_place(&h);
    // …and every later move keeps the totals: a run, a retry, an enqueue, a prune.
    h.ok(&["worker", "--drain"]);
    let status = h.status();
    assert_eq!(count(&status, "succeeded"), 3, "{status}");
    assert_eq!(count(&status, "queued"), 0, "{status}");
    assert!(h.results(&["fx-big.txt"])[0]["answer"].is_string());
    h.ok(&["retry", "3"]);
    let doc = h.doc("after.txt", "a document after the upgrade");
    h.ok(&[
        "enqueue",
        s(&doc),
        "--model",
        "fx-tiny",
        "--max-tokens",
        "8",
    ]);
    let status = h.status();
    assert_eq!(count(&status, "queued"), 2, "{status}");
    assert_eq!(count(&status, "cancelled"), 0, "{status}");
    h.ok(&["worker", "--drain"]);
    assert!(h.ok(&["prune", "--older-than", "0s"]).contains("pruned 5"));
    let status = h.status();
    for state in [
        "queued",
        "running",
        "succeeded",
        "failed",
        "dead",
        "cancelled",
    ] {
        assert_eq!(count(&status, state), 0, "{state}: {status}");
    }
}

/// The jobs of the v7 and v8 fixtures (`queued` of them: v8 adds a delayed one), and the
/// results of `fx-a.txt` and `chat-1` with every byte of their answers and usage, returned.
fn fixture_results_kept(h: &TestHome, queued: u64) -> Vec<serde_json::Value> {
    let status = h.status();
    assert_eq!(count(&status, "succeeded"), 2, "{status}");
    assert_eq!(count(&status, "queued"), queued, "{status}");
    assert_eq!(count(&status, "cancelled"), 1, "{status}");
    let before = h.results(&["fx-a.txt", "chat-1"]);
    assert_eq!(before[0]["answer"], "犯罪ANDLErendsㄖbaum❣ فوق-M");
    assert_eq!(before[0]["usage"]["prompt_tokens"], 41);
    assert_eq!(
        before[1]["answer"],
        "hash짱chart如果玩家התאמה HEAP mgasortable"
    );
    assert_eq!(before[1]["usage"]["completion_tokens"], 8);
    before
}

#[test]
fn a_store_written_by_schema_v7_keeps_its_results_and_new_ones_record_what_ran_them() {
    let h = home_with_fixture("store-v7.tar.gz");
    // The results written before keep every byte of their answers and usage; what ran them
    // was not recorded, and says so (null).
    let before = fixture_results_kept(&h, 1);
    for r in &before {
        assert!(r["provenance"].is_null(), "{r}");
    }
    // A job run after the upgrade records the model by its content, the template, the
    // kernels and the engine.
    fixture_model_in_place(&h);
    h.ok(&["worker", "--drain"]);
    let after = &h.results(&["fx-b.txt"])[0];
    assert_eq!(after["state"], "succeeded", "{after}");
    let p = &after["provenance"];
    let size = std::fs::metadata("/tmp/fixture-model.gguf").unwrap().len();
    let model = p["model"].as_str().unwrap();
    assert!(
        model.starts_with("gguf-sha256:") && model.ends_with(&format!(":{size}")),
        "{p}"
    );
    assert_eq!(p["kernels"], "fastest", "the default: {p}");
    assert!(
        p["engine"].as_str().unwrap().starts_with("llama.cpp"),
        "{p}"
    );
    assert!(p["template"].is_string(), "{p}");
    assert_eq!(
        h.results(&["fx-a.txt"])[0]["answer"],
        before[0]["answer"],
        "an old result is left as it was"
    );
}

#[test]
fn a_store_written_by_schema_v8_keeps_its_results_provenance_and_delayed_job() {
    let h = home_with_fixture("store-v8.tar.gz");
    // The results keep every byte of their answers, usage and what ran them.
    let before = fixture_results_kept(&h, 2);
    for r in &before {
        let p = &r["provenance"];
        assert_eq!(
            p["model"],
            "gguf-sha256:11fa33da32b3400111205709d6da933927e8dd5785088b81441703ec0010e184:44978720",
            "{r}"
        );
        assert_eq!(
            p["engine"], "llama.cpp (llama-cpp-sys-2 0.1.161+qwen3q.2)",
            "{r}"
        );
        assert_eq!(p["kernels"], "fastest", "{r}");
        assert_eq!(p["template"], "gguf", "{r}");
    }
    // The queued job (priority 5) runs; the one delayed until 2099 stays queued, and the
    // drain says so.
    fixture_model_in_place(&h);
    let drain = h.run(&["worker", "--drain"]);
    let said = String::from_utf8_lossy(&drain.stderr);
    assert!(drain.status.success(), "{said}");
    assert!(
        said.contains("drained: nothing ready; 1 jobs wait for a retry or their start time"),
        "{said}"
    );
    let after = h.results(&["fx-b.txt", "fx-d.txt", "fx-c.txt"]);
    assert_eq!(after[0]["state"], "succeeded", "{}", after[0]);
    assert_eq!(after[1]["state"], "queued", "{}", after[1]);
    assert_eq!(after[2]["state"], "cancelled", "{}", after[2]);
    assert_eq!(h.results(&["fx-a.txt"])[0]["answer"], before[0]["answer"]);
    // Schema 9: the jobs enqueued before batches belong to none, and the first enqueue after
    // the upgrade makes batch_1 (the delayed job, at priority 2, is still behind it in line).
    assert!(after.iter().all(|j| j["batch"].is_null()), "{after:?}");
    assert_eq!(h.ok(&["batches"]).trim(), "no batches");
    let doc = h.doc("fx-e.txt", "a document after the upgrade");
    let out = h.run(&[
        "enqueue",
        s(&doc),
        "--model",
        "fx-tiny",
        "--max-tokens",
        "8",
    ]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("queued 1 in batch_1"), "{said}");
    h.ok(&["worker", "--drain"]);
    let b: serde_json::Value =
        serde_json::from_str(&h.ok(&["batch", "show", "batch_1", "--json"])).unwrap();
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(h.results(&["fx-d.txt"])[0]["state"], "queued");
}

/// The store schema 9 wrote (batches, an upload, an API batch, deadlines): this build opens it
/// with every batch, its counts and deadline, the upload's text, and runs what it left queued.
#[test]
fn a_store_written_by_schema_v9_keeps_its_batches_upload_and_deadlines() {
    let h = home_with_fixture("store-v9.tar.gz");
    let batches: Vec<serde_json::Value> =
        serde_json::from_str(&h.ok(&["batches", "--json"])).unwrap();
    let by_id = |id: &str| batches.iter().find(|b| b["id"] == id).unwrap().clone();
    assert_eq!(batches.len(), 5, "{batches:?}");
    let first = by_id("batch_1");
    assert_eq!(first["status"], "completed", "{first}");
    assert_eq!(first["name"], "fixture a");
    assert_eq!(first["metadata"]["team"], "ops");
    let third = by_id("batch_3");
    assert_eq!(third["counts"]["succeeded"], 1, "{third}");
    assert_eq!(third["counts"]["cancelled"], 1, "{third}");
    let api = by_id("batch_5");
    assert_eq!(api["input_file_id"], "file-1", "{api}");
    assert_eq!(api["metadata"]["via"], "api");
    let api_deadline = api["deadline"].as_u64().unwrap();
    assert_eq!(
        by_id("batch_4")["deadline"].as_u64().unwrap() / 86_400 / 365,
        2126 - 1970,
        "fx-d's batch: a century away"
    );
    let results = h.results(&["fx-a.txt", "chat-1"]);
    assert!(
        results.iter().all(|r| r["state"] == "succeeded"),
        "{results:?}"
    );
    assert_eq!(results[0]["batch"], "batch_1");
    // The worker runs the API batch's request — or it expires, once its 24 h have passed
    // (the fixture was written on 2026-12-07); the delayed fx-d stays queued.
    fixture_model_in_place(&h);
    h.ok(&["resume"]);
    h.ok(&["worker", "--drain"]);
    let api =
        serde_json::from_str::<serde_json::Value>(&h.ok(&["batch", "show", "batch_5", "--json"]))
            .unwrap();
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expected = if now_s > api_deadline {
        "expired"
    } else {
        "completed"
    };
    assert_eq!(api["status"], expected, "{api}");
    assert_eq!(h.results(&["fx-d.txt"])[0]["state"], "queued");
    // The upload's text comes back as written, through the API.
    let addr = format!("127.0.0.1:{}", free_port());
    let mut worker = h.spawn_worker(&["--http", &addr]);
    h.wait_for_worker(&mut worker);
    let key = h.ok(&["api-key"]).trim().to_string();
    let out = std::process::Command::new("curl")
        .args(["-sf", "-H", &format!("Authorization: Bearer {key}")])
        .arg(format!("http://{addr}/v1/files/file-1/content"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with(r#"{"custom_id":"api-1""#), "{text}");
    sigterm(&worker);
    wait_exit(&mut worker, std::time::Duration::from_secs(30)).expect("the worker stops");
}
