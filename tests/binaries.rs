//! The two binaries: `qwen3q`, which links no llama.cpp so that commands start fast, and
//! `qwen3q-engine` beside it, which decodes. The worker's runner and `calibrate` run as the
//! engine; a missing engine or one from another build is refused in one line, and nothing stored
//! is touched.

use crate::common::*;

/// A symbol of ggml's compute graph: in a binary that links llama.cpp, absent otherwise.
const LLAMA_SYMBOL: &[u8] = b"ggml_graph_compute";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn qwen3q_links_no_llama_cpp_and_its_worker_decodes_through_the_engine_binary() {
    let thin = std::fs::read(env!("CARGO_BIN_EXE_qwen3q")).unwrap();
    let engine = std::fs::read(env!("CARGO_BIN_EXE_qwen3q-engine")).unwrap();
    assert!(
        contains(&engine, LLAMA_SYMBOL),
        "the engine binary links llama.cpp (else this check proves nothing)"
    );
    assert!(
        !contains(&thin, LLAMA_SYMBOL),
        "qwen3q links llama.cpp: every command pays its start-up"
    );

    let h = TestHome::new();
    let doc = h.doc("a.txt", "The engine binary decodes this document.");
    h.enqueue_tiny(&doc, "4");
    h.ok(&["worker", "--drain"]);
    let r = &h.results(&[])[0];
    assert_eq!(r["state"], "succeeded", "{r}");
    assert!(
        r["provenance"]["engine"]
            .as_str()
            .is_some_and(|e| e.starts_with("llama.cpp")),
        "{r}"
    );
    // `calibrate` becomes the engine binary (exec) and sweeps the real model.
    let out = h.ok(&[
        "calibrate",
        s(&tiny()),
        "--max-parallel",
        "2",
        "--max-tokens",
        "4",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["points"].as_array().map(Vec::len), Some(2), "{v}");
}

#[test]
fn a_missing_engine_or_one_of_another_build_is_refused_in_one_line_and_nothing_is_lost() {
    // qwen3q alone in a directory: the commands that do not decode work, the worker names the
    // missing binary.
    let dir = tempfile::tempdir().unwrap();
    let alone = dir.path().join("qwen3q");
    std::fs::copy(env!("CARGO_BIN_EXE_qwen3q"), &alone).unwrap();
    let h = TestHome::with_bin(alone);
    let doc = h.doc("a.txt", "A document that waits for an engine.");
    h.enqueue_tiny(&doc, "4");
    let line = h.fails(&["worker", "--drain"], 1);
    assert!(
        line.contains("qwen3q-engine is missing") && line.contains(s(dir.path())),
        "{line}"
    );
    let line = h.fails(&["calibrate", s(&tiny())], 1);
    assert!(line.contains("qwen3q-engine is missing"), "{line}");
    assert_eq!(count(&h.status(), "queued"), 1);

    // An engine told of another build refuses, whatever the verb.
    let engine = TestHome::with_bin(env!("CARGO_BIN_EXE_qwen3q-engine").into());
    let out = engine
        .command(&["status"])
        .env("QWEN3Q_BUILD", "0000000000000000")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.lines().count() == 1 && err.contains("another build"),
        "{err}"
    );
    // Started by its own qwen3q, it runs.
    engine.ok(&["status"]);
}
